"""Our NF4 matvec kernel vs bitsandbytes' batch-1 gemv, per SmolLM3-3B matrix, on one GPU.

For each decode matvec of the 3B shape (q/k/v with RMSNorm, o with residual, gate/up with
RMSNorm and SiLU, down with residual) it quantizes 36 random matrices with bitsandbytes (NF4,
blocksize 64, double quantization, as smolchat loads them), then times every kernel config of
ours (both rounding modes) and bitsandbytes' ``gemm_4bit`` (+ torch for the fusions), each
over the 36 matrices in one CUDA graph (so weights stream from memory, as in a real step).
Prints a table and writes JSON: microseconds per matvec and GB/s of NF4 storage read.

Usage: ``python benchmarks/nf4_kernels.py --out nf4_kernels.json``
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smolchat.engine import kernels as K  # noqa: E402

SHAPES = {  # name: (N, K, fused)
    "qkv": (3072, 2048, "norm"),
    "o": (2048, 2048, "res"),
    "gate_up": (2 * 11008, 2048, "gated"),
    "down": (2048, 11008, "res"),
}
LAYERS = 36


def nbytes(m: K.NF4Matrix) -> int:
    return m.packed.numel() + m.absmax.numel() + m.absmax2.numel() * 4


def main() -> None:
    import bitsandbytes as bnb

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("nf4_kernels.json"))
    args = ap.parse_args()
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)
    results: dict = {"card": torch.cuda.get_device_name(), "shapes": {}}
    total_best = 0.0
    for name, (n, k, fused) in SHAPES.items():
        mats = []
        for _ in range(LAYERS):
            w = (torch.randn(n, k, device=dev, generator=g) * 0.02).to(torch.bfloat16)
            p, qs = bnb.functional.quantize_4bit(
                w, blocksize=64, compress_statistics=True, quant_type="nf4"
            )
            mats.append(K.NF4Matrix.from_quant_state(p, qs))
            del w
        x = torch.randn(k, device=dev, dtype=torch.bfloat16)
        nw = torch.ones(k, device=dev, dtype=torch.bfloat16)
        res = torch.randn(n, device=dev, dtype=torch.bfloat16)
        kw: dict = {
            "norm": {"norm": nw},
            "res": {"res": res},
            "gated": {"norm": nw, "gated": True},
        }[fused]
        rows = []
        for round_w in (True, False):
            K.NF4_ROUND_WEIGHTS = round_w
            for cfg in (*K.NF4_CONFIGS, "torch"):
                if cfg == "torch" and not round_w:
                    continue
                try:

                    def run(cfg=cfg, kw=kw, x=x, mats=mats):
                        return [K.nf4_gemv(x, m, config=cfg, **kw) for m in mats]

                    t = K._time_graph(run, replays=10)
                except Exception as exc:  # a config this device cannot run
                    torch.cuda.synchronize()
                    rows.append({"config": str(cfg), "error": str(exc)[:120]})
                    continue
                t /= LAYERS
                label = "bnb+torch" if cfg == "torch" else f"{cfg} round={round_w}"
                rows.append(
                    {
                        "config": label,
                        "us": round(t * 1e6, 2),
                        "gb_s": round(nbytes(mats[0]) / t / 1e9, 1),
                    }
                )
        K.NF4_ROUND_WEIGHTS = True
        ok = [r for r in rows if "us" in r]
        ok.sort(key=lambda r: r["us"])
        best_round = next(r for r in ok if "round=True" in r["config"])
        total_best += best_round["us"] * LAYERS
        results["shapes"][name] = {"n": n, "k": k, "bytes": nbytes(mats[0]), "rows": ok}
        print(f"{name} ({n}x{k}, {nbytes(mats[0]) / 1e6:.2f} MB):")
        for r in ok[:6] + [r for r in ok if r["config"] == "bnb+torch"]:
            print(f"  {r['config']:<34} {r['us']:8.2f} us  {r['gb_s']:7.1f} GB/s")
        del mats
        torch.cuda.empty_cache()
    results["layers_us_per_token_best_rounded"] = round(total_best, 1)
    print(f"36 layers of matvecs (best rounded configs): {total_best:.0f} us per token")
    args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
