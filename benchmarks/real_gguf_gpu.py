"""NF4 vs bf16 on the real SmolLM2-135M-Instruct GGUF, on one CUDA GPU (issue 5's proof).

Prints and writes JSON: weight memory and peak memory while loading, top-1 agreement and mean
KL of NF4 vs bf16 next-token distributions over a 512-token prompt, the greedy answer to
"What is the capital of France?" under both, and decode tok/s of each.

    python benchmarks/real_gguf_gpu.py GGUF_PATH --out real.json
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import smolchat  # noqa: E402
from smolchat import SamplingParams  # noqa: E402

GREEDY = SamplingParams(temperature=0.0)
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
TEXT = (
    "The history of Paris spans more than two thousand years. The city grew on the banks of "
    "the Seine, and its bridges, markets and churches tell the story of France. "
)


def measure(gguf: str, quantize: str | None, device: str) -> tuple[smolchat.Engine, dict]:
    gc.collect()
    cuda = device == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() if cuda else 0
    engine = smolchat.load(gguf, device=device, dtype="bfloat16", quantize=quantize)
    out = {}
    if cuda:
        out["weights_gib"] = round((torch.cuda.memory_allocated() - base) / 2**30, 4)
        out["peak_while_loading_gib"] = round((torch.cuda.max_memory_allocated() - base) / 2**30, 4)
    chat = engine.tokenizer.encode_chat(QUESTION)
    out["france_answer"] = "".join(e.text for e in engine.generate(chat, GREEDY, 32)).strip()
    engine.reset_cache()
    ids = engine.tokenizer.encode(TEXT * 20)[:128]
    rates = []
    for _ in range(3):
        engine.reset_cache()
        list(engine.generate(ids, GREEDY, 256, stop_ids=[]))
        rates.append(engine.last_stats.decode_tok_s)
    out["decode_tok_s"] = round(max(rates), 1)
    return engine, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("--out", type=Path, default=Path("real_gguf_gpu.json"))
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    card = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    result = {"card": card, "torch": torch.__version__}
    bf16, result["bf16"] = measure(args.gguf, None, args.device)
    ids = bf16.tokenizer.encode(TEXT * 20)[:512]
    ref = bf16.logits(ids)
    del bf16
    nf4, result["nf4"] = measure(args.gguf, "nf4", args.device)
    got = nf4.logits(ids)
    lp, lq = torch.log_softmax(ref, -1), torch.log_softmax(got, -1)
    result["prompt_tokens"] = len(ids)
    result["top1_agreement"] = round((ref.argmax(-1) == got.argmax(-1)).float().mean().item(), 4)
    result["mean_kl"] = round((lp.exp() * (lp - lq)).sum(-1).mean().item(), 5)
    print(json.dumps(result, indent=2))
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
