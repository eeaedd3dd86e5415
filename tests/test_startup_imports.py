"""Start-up cost: loading a model must not pull in torch's compiler stack (torch._dynamo, with
sympy and the FSDP modules: 4-9 s per launch), and the meta build must leave initialisers of
modules built outside it alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from smolchat.model.meta import on_meta

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import sys
import smolchat
from smolchat.engine.types import SamplingParams
engine = smolchat.load(sys.argv[1], device="cpu")
ids = engine.tokenizer.encode("Hello")
list(engine.generate(ids, SamplingParams(temperature=0.0), max_new_tokens=3))
print(sorted(m for m in ("torch._dynamo", "sympy", "torch._inductor") if m in sys.modules))
"""


def compiler_modules_after(probe: str, model: Path) -> str:
    """Run ``probe`` on ``model`` in a fresh process: its last line, the compiler modules it
    imported (``"[]"`` for none)."""
    out = subprocess.run(
        [sys.executable, "-c", probe, str(model)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def test_loading_and_decoding_import_no_compiler_stack(tiny_model: Path) -> None:
    assert compiler_modules_after(PROBE, tiny_model) == "[]"


def test_on_meta_skips_initialisers_only_inside_the_block() -> None:
    with on_meta():
        inside = nn.Linear(8, 8)
        embed = nn.Embedding(16, 8)
    assert inside.weight.is_meta and embed.weight.is_meta
    torch.manual_seed(0)
    outside = nn.Linear(8, 8)  # the real initialiser again: random, not zeros
    assert not outside.weight.is_meta and outside.weight.abs().sum() > 0
    assert nn.Linear.__dict__["reset_parameters"].__name__ == "reset_parameters"


CUDA_PROBE = (
    PROBE.replace('device="cpu"', 'device="cuda"')
    + """
assert engine.fast is not None and engine.fast.mode.endswith("triton"), engine.fast
"""
)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_triton_decoding_imports_no_compiler_stack(tiny_model: Path) -> None:
    """The Triton path never compiles; its capture must not import torch._dynamo either (it
    did through maybe_mark_dynamic: 4-5 s of a launch on the H200)."""
    assert compiler_modules_after(CUDA_PROBE, tiny_model) == "[]"
