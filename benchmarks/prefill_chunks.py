"""Prefill speed at several prefill chunk sizes (Engine.prefill_chunk, SMOLCHAT_PREFILL_CHUNK).

A smaller chunk gives finer prefill progress (and a quicker stop) at the cost of more forward
passes; this prints what that costs on one model and device, so the default can be chosen::

    python benchmarks/prefill_chunks.py --model smollm3-3b-shape --device cuda   # H200
    python benchmarks/prefill_chunks.py --model SmolLM2-135M-Instruct.Q4_1.gguf --device cpu

Runs are interleaved (every size once per round), the best of ``--rounds`` is kept. Only our
own engine is measured: the figure of interest is the ratio to the one-chunk prefill.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import smolchat  # noqa: E402
from smolchat import SamplingParams  # noqa: E402


def model_path(name: str, work: Path) -> str:
    if name != "smollm3-3b-shape":
        return str(Path(name).expanduser())
    from bench import SMOLLM3_3B, build_checkpoint

    from tests.tiny import build_tokenizer

    folder = work / "smollm3-3b-shape"
    build_checkpoint(folder, SMOLLM3_3B)
    if not (folder / "tokenizer.json").exists():
        build_tokenizer(folder)
    return str(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm3-3b-shape")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--prompt", type=int, nargs="+", default=[2048, 8192])
    parser.add_argument("--chunks", type=int, nargs="+", default=[8192, 2048, 1024, 512, 256])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", default=tempfile.gettempdir())
    args = parser.parse_args()

    engine = smolchat.load(model_path(args.model, Path(args.work)), device=args.device)
    greedy = SamplingParams(temperature=0.0)
    g = torch.Generator().manual_seed(0)
    print(f"{args.model} on {engine.device} ({engine.quantize or engine.dtype})")
    for n in args.prompt:
        ids = torch.randint(100, engine.config.vocab_size - 100, (n,), generator=g).tolist()
        best = {c: float("inf") for c in args.chunks}
        for _ in range(args.rounds):
            for chunk in args.chunks:
                engine.reset_cache()
                engine.prefill_chunk = chunk
                list(engine.generate(ids, sampling=greedy, max_new_tokens=1, stop_ids=[]))
                assert engine.last_stats is not None
                best[chunk] = min(best[chunk], engine.last_stats.ttft_s)
        one = best[max(args.chunks)]
        print(f"prompt {n} tokens (best of {args.rounds}):")
        for chunk in args.chunks:
            t = best[chunk]
            print(
                f"  chunk {chunk:5d}: {1000 * t:9.1f} ms  {n / t:9.0f} tok/s  "
                f"{t / one:5.2f}x the {max(args.chunks)}-token chunk"
            )


if __name__ == "__main__":
    main()
