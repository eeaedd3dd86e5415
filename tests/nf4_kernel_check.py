"""Our NF4 matvec kernel against bitsandbytes' dequantize-then-matmul, on any device.

Used by ``tests/test_nf4.py`` in-process on CUDA, and in a subprocess under Triton's CPU
interpreter (``python -m tests.nf4_kernel_check``, which prints one JSON line of errors).

Each case quantizes a fresh random bf16 matrix with bitsandbytes (blocksize 64, with and
without double quantization), then compares, as relative L2 errors against a float64
reference computed from bitsandbytes' own dequantized (bf16) weights:

- ``ours``: our kernel's output; ``bnb``: bitsandbytes' dequantize_4bit + a bf16 matmul.
  "Equal within bf16 rounding" means ``ours`` is no worse than ``bnb`` (both only round the
  output to bf16) beyond a small margin.
- the fused variants (RMSNorm before, SiLU gate, residual) against the same composition of
  torch ops on bitsandbytes' dequantized weights.
"""

from __future__ import annotations

import json
import sys

import torch
import torch.nn.functional as F


def cases(device: str) -> list[tuple[int, int, bool]]:
    """(N, K, nested): K a multiple of 64; N odd sizes to exercise the row masks."""
    if device == "cpu":  # the interpreter is slow: small shapes
        return [(20, 320, False), (36, 192, True)]
    return [(3072, 2048, True), (2048, 11008, True), (1000, 576, False), (4100, 1536, True)]


def rel(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.double(), want.double()
    return ((got - want).norm() / want.norm()).item()


@torch.inference_mode()
def check(device: str, configs=None, seed: int = 0) -> list[dict]:
    import bitsandbytes as bnb

    from smolchat.engine import kernels as K

    g = torch.Generator(device=device).manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, device=device, generator=g) * scale).to(torch.bfloat16)

    out = []
    for n, k, nested in cases(device):
        w = rnd(2 * n, k, scale=0.02)  # gate/up-shaped: 2n rows; the plain cases use them all
        packed, qs = bnb.functional.quantize_4bit(
            w, blocksize=64, compress_statistics=nested, quant_type="nf4"
        )
        m = K.NF4Matrix.from_quant_state(packed, qs)
        wd = bnb.functional.dequantize_4bit(packed, qs)  # bf16 (2n, k), bnb's own weights
        exact = torch.equal(m.dequantize().to(torch.bfloat16), wd)
        x, nw, res = rnd(k), 1 + rnd(k, scale=0.1), rnd(2 * n)
        ref = wd.double() @ x.double()
        bnb_out = F.linear(x.view(1, -1), wd).view(-1)
        h = F.rms_norm(x, (k,), nw, 1e-6)
        gu = F.linear(h, wd)
        want_gated = F.silu(gu[:n]) * gu[n:]
        want_norm = F.linear(h, wd)
        want_res = res + F.linear(x, wd)
        for cfg in configs or K.NF4_CONFIGS:
            poison = torch.full((2 * n,), float("nan"), device=device, dtype=torch.bfloat16)
            got = K.nf4_gemv(x, m, config=cfg, out=poison.clone())
            got_norm = K.nf4_gemv(x, m, config=cfg, norm=nw, out=poison.clone())
            got_gated = K.nf4_gemv(x, m, config=cfg, norm=nw, gated=True, out=poison[:n].clone())
            r2 = res.clone()
            K.nf4_gemv(x, m, config=cfg, res=r2, out=r2)  # in place, as the decode step does
            out.append(
                {
                    "n": n,
                    "k": k,
                    "nested": nested,
                    "config": list(cfg),
                    "dequantize_exact": exact,
                    "ours": rel(got, ref),
                    "bnb": rel(bnb_out, ref),
                    "norm": rel(got_norm, want_norm),
                    "gated": rel(got_gated, want_gated),
                    "res": rel(r2, want_res),
                    "nan": any(bool(t.isnan().any()) for t in (got, got_norm, got_gated, r2)),
                }
            )
    return out


if __name__ == "__main__":
    import tests.triton_cpu  # noqa: F401, I001  (interpreter on, before the kernels)

    from smolchat.engine import kernels

    configs = [kernels.NF4_CONFIGS[0], kernels.NF4_CONFIGS[4]]
    print(json.dumps(check("cpu", configs)))
    sys.exit(0)
