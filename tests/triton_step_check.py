"""The CUDA fast path's Triton step (the model's decode step with ``TritonOps``) in Triton's CPU
interpreter, against the general forward (``CausalLM.forward``) on the same weights.

``python -m tests.triton_step_check FOLDER...`` prints one JSON line: per folder, the kernels
the decoder chose and the largest |logit difference| over a few steps after a prefill. Used by
``tests/test_cuda.py`` (the same code runs on the GPU there, captured in CUDA graphs).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

PREFILL, STEPS = 44, 2  # past the sliding-window case's 40 keys


@torch.inference_mode()
def check(folder: Path) -> dict:
    from smolchat.engine.fast import FastDecoder
    from smolchat.model.cache import KVCache
    from tests.test_cache import ids_of, load_model

    model = load_model(folder)
    cfg = model.config
    ids = ids_of(PREFILL + STEPS, cfg.vocab_size, 11)
    cache = KVCache(cfg, torch.device("cpu"), torch.float32, cfg.max_position_embeddings)
    cache.ensure_capacity(len(ids))
    model(torch.tensor([ids[:PREFILL]]), cache, 0)
    fast = FastDecoder(model, cache, graphs=False, compile=False, kernels="triton")
    expected = model(torch.tensor([ids]))[0, PREFILL:]
    fast.start(PREFILL)
    worst, picks = 0.0, True
    for i, pos in enumerate(range(PREFILL, len(ids))):
        fast.stage(torch.tensor([ids[pos]]))
        fast.step()
        assert fast.logits is not None
        worst = max(worst, (fast.logits[0] - expected[i]).abs().max().item())
        picks &= int(fast.tok) == int(expected[i].argmax()) and int(fast.pos) == pos + 1
    return {"mode": fast.kernels, "max_abs": worst, "greedy_and_pos": picks}


if __name__ == "__main__":
    import tests.triton_cpu  # noqa: F401, I001  (interpreter on, before the kernels)

    torch.set_num_threads(1)
    print(json.dumps({name: check(Path(name)) for name in sys.argv[1:]}))
