"""CPU matmul kernels at batch 1, SmolLM2-135M shapes: which weight form decodes fastest.

Times ``x (1, K) @ W.T`` for each decoder matrix (fused q/k/v 960x576, o 576x576, fused
gate/up 3072x576, down 576x1536, head 49152x576) in float32, bf16, int8 weight-only
(``aten._weight_int8pack_mm``, per-channel scales) and int4 weight-only
(``aten._weight_int4pack_mm_for_cpu``, groups of 32 with a scale and a zero), and prints the
time per token for a 30-layer model. Kernels are interleaved round by round and the best
round kept (the machine is shared).

Usage::

    python benchmarks/cpu_kernels.py [--threads 2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

SHAPES = {"qkv": (960, 576), "o": (576, 576), "gate_up": (3072, 576), "down": (576, 1536)}
HEAD = (49152, 576)
LAYERS = 30


def int8_pack(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scale = w.abs().amax(1).clamp_min(1e-8) / 127
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale.to(torch.bfloat16)


def int4_pack(w: torch.Tensor, group: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    n, k = w.shape
    g = w.reshape(n, k // group, group)
    lo, hi = g.amin(-1), g.amax(-1)
    scale = ((hi - lo) / 15).clamp_min(1e-8)
    q = torch.round((g - lo[..., None]) / scale[..., None]).clamp(0, 15).to(torch.int32)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.reshape(n, k), 1)
    zero = lo + 8 * scale
    sz = torch.stack([scale, zero], -1).transpose(0, 1).contiguous().to(torch.bfloat16)
    return packed, sz  # sz: (K/group, N, 2)


def kernels(n: int, k: int) -> dict[str, tuple]:
    w = torch.randn(n, k) / k**0.5
    q8, s8 = int8_pack(w)
    q4, sz4 = int4_pack(w)
    wb = w.to(torch.bfloat16)
    xf, xb = torch.randn(1, k), torch.randn(1, k, dtype=torch.bfloat16)
    return {
        "float32": (lambda: F.linear(xf, w),),
        "bf16": (lambda: F.linear(xb, wb),),
        "int8": (lambda: torch.ops.aten._weight_int8pack_mm(xb, q8, s8),),
        "int4 g32": (lambda: torch.ops.aten._weight_int4pack_mm_for_cpu(xb, q4, 32, sz4),),
    }


def best_us(fn, iters: int) -> float:
    for _ in range(3):
        fn()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) / iters * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    shapes = dict(SHAPES, head=HEAD)
    ks = {name: kernels(*shape) for name, shape in shapes.items()}
    best: dict[tuple[str, str], float] = {}
    for _ in range(args.rounds):
        for name, table in ks.items():
            iters = 20 if name == "head" else 200
            for kind, (fn,) in table.items():
                us = best_us(fn, iters)
                best[name, kind] = min(us, best.get((name, kind), float("inf")))
    kinds = list(next(iter(ks.values())))
    print(f"threads={args.threads}, best of {args.rounds} interleaved rounds, microseconds")
    print(f"{'matrix':10s}" + "".join(f"{k:>12s}" for k in kinds))
    for name in shapes:
        print(f"{name:10s}" + "".join(f"{best[name, k]:12.1f}" for k in kinds))
    print(f"{'per token':10s}", end="")
    for k in kinds:
        layer = sum(best[n, k] for n in SHAPES)
        print(f"{(LAYERS * layer + best['head', k]) / 1000:10.2f}ms", end="")
    print()


if __name__ == "__main__":
    main()
