"""Where a launch's seconds go: one process, timed stage by stage, printed as one JSON line.

``python benchmarks/startup_probe.py CKPT [--quantize nf4]``: import torch, CUDA init, import
smolchat, load (weights to the GPU), tune (or read the tuning cache) and capture the decode
step, first token, 64 tokens. Used by ``bench.py``'s ``startup`` phase beside whole
``smolchat -p`` processes.
"""

from __future__ import annotations

import json
import sys
import time

T0 = time.perf_counter()


def main() -> None:
    stages: dict[str, float] = {}
    last = T0

    def mark(name: str) -> None:
        nonlocal last
        now = time.perf_counter()
        stages[name] = round(now - last, 3)
        last = now

    import torch

    mark("import_torch")
    torch.cuda.init()
    torch.zeros(1, device="cuda")
    mark("cuda_init")
    import smolchat
    from smolchat.engine.types import SamplingParams

    mark("import_smolchat")
    quantize = "nf4" if "--quantize" in sys.argv else None
    engine = smolchat.load(sys.argv[1], device="cuda", quantize=quantize)
    mark("load_tune_capture")
    if engine.fast is not None:
        stages.update({k: round(v, 3) for k, v in engine.fast.timings.items()})
        stages["tuning_from_cache"] = engine.fast.tuning_cached
    ids = engine.tokenizer.encode("Hello there")
    first = None
    for _event in engine.generate(ids, SamplingParams(temperature=0.0), max_new_tokens=64):
        if first is None:
            first = time.perf_counter() - T0
    mark("generate_64")
    stages["first_token_since_start"] = round(first or 0.0, 3)
    print(json.dumps(stages))


if __name__ == "__main__":
    main()
