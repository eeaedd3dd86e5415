"""Quantized GGUF weights on the CPU: exact repacking of 4-bit blocks, the int4/int8 kernels
against float matmuls, the lean CPU decode step against the general forward, and the real
SmolLM2 against the exact float32 path (top-1 agreement, the Paris answer, memory)."""

from __future__ import annotations

import logging
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

import smolchat
from smolchat import SamplingParams
from smolchat.engine.cpu import CPUDecoder
from smolchat.engine.types import GenerationStats
from smolchat.model.gguf import GGUFFile
from smolchat.model.qcpu import (
    Int4Linear,
    Int8Embedding,
    Int8Linear,
    QuantizedWeight,
    RefinedHead,
    from_gguf,
    grouped_table,
    int4_table,
    int8_rows,
    quantize_int4,
    quantize_int8,
    top_candidates,
)
from tests.test_gguf import _k_blocks, _tiny_gguf, write_gguf

T = gguf.GGMLQuantizationType
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def _one(path: Path, name: str = "x"):
    f = GGUFFile(path)
    return f, next(t for t in f.tensors if t.name == name)


# -- repacking: 4-bit blocks map onto int4 groups exactly ---------------------------------


@pytest.mark.parametrize("qtype", [T.Q4_0, T.Q4_1, T.Q4_K], ids=lambda t: t.name)
def test_four_bit_blocks_repack_exactly(tmp_path: Path, qtype) -> None:
    rng = np.random.default_rng(int(qtype))
    if qtype == T.Q4_K:
        data = _k_blocks(qtype, 4 * 2, rng).reshape(4, -1)  # 4 rows of 512
    else:
        x = (rng.standard_normal((4, 512)) * rng.uniform(0.01, 3, (4, 1))).astype(np.float32)
        data = gguf.quants.quantize(x, qtype)
    f, info = _one(write_gguf(tmp_path / "q.gguf", "llama", {}, {"x": (data, qtype)}))
    q = from_gguf(f, info)
    assert q.kind == "int4" and q.shape == (4, 512)
    assert int(q.codes.max()) <= 15
    reference = torch.from_numpy(gguf.quants.dequantize(data, qtype))
    torch.testing.assert_close(q.dequantize(), reference, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("qtype", [T.Q8_0, T.Q5_0, T.Q5_1, T.Q5_K, T.Q6_K], ids=lambda t: t.name)
def test_other_blocks_requantize_to_int8_rows(tmp_path: Path, qtype) -> None:
    rng = np.random.default_rng(int(qtype))
    if qtype in (T.Q5_K, T.Q6_K):
        data = _k_blocks(qtype, 4 * 2, rng).reshape(4, -1)
    else:
        x = rng.standard_normal((4, 512)).astype(np.float32)
        data = gguf.quants.quantize(x, qtype)
    f, info = _one(write_gguf(tmp_path / "q.gguf", "llama", {}, {"x": (data, qtype)}))
    q = from_gguf(f, info)
    assert q.kind == "int8" and q.codes.dtype == torch.int8
    reference = torch.from_numpy(gguf.quants.dequantize(data, qtype))
    step = reference.abs().amax(1, keepdim=True) / 127  # half a step at most, per row
    assert ((q.dequantize() - reference).abs() <= step / 2 + 1e-7).all()
    assert q.nbytes <= 1.5 * info.nbytes  # the memory goal, per tensor


# -- the kernels against float matmuls (tolerances of bf16 activations) -------------------


@pytest.mark.parametrize("kind", ["int4", "int8"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_quantized_linear_matches_float_matmul(kind: str, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    w = torch.randn(192, 256) / 16
    q = quantize_int4(w) if kind == "int4" else quantize_int8(w)
    module = Int4Linear(q, dtype, None) if kind == "int4" else Int8Linear(q, dtype, None)
    x = torch.randn(3, 5, 256)
    with torch.inference_mode():
        got = module(x.to(dtype)).float()
    assert got.shape == (3, 5, 192) and module(x.to(dtype)).dtype == dtype
    # the kernels are 20-30x slower on float32 inputs: they always run in bf16
    kernel_inputs = module.scales_zeros if kind == "int4" else module.scales
    assert kernel_inputs.dtype == torch.bfloat16
    # the reference uses the *dequantized* weight and bf16-rounded inputs (the kernels take
    # bf16 activations whatever the model's dtype): what is left is the kernel's arithmetic
    ref = x.to(torch.bfloat16).float() @ q.dequantize().T
    rel = (got - ref).norm() / ref.norm()
    assert rel < 1e-2, rel
    # and the quantization itself stays close to the float weight
    assert (q.dequantize() - w).abs().max() < (w.abs().max() / (7 if kind == "int4" else 127))


def test_grouped_table_rows_and_refined_head(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    table = rng.standard_normal((320, 64)).astype(np.float32)
    table[:, 5] *= 40  # an outlier column: one scale per row would lose the rest
    data = gguf.quants.quantize(table, T.Q8_0)
    f, info = _one(write_gguf(tmp_path / "t.gguf", "llama", {}, {"x": (data, T.Q8_0)}))
    grouped = grouped_table(f, info)
    reference = torch.from_numpy(gguf.quants.dequantize(data, T.Q8_0))
    ids = torch.tensor([[3, 319, 0]])
    assert torch.equal(grouped.rows(ids), reference[ids])  # Q8_0 codes kept exactly
    embed = Int8Embedding(grouped, torch.bfloat16)
    assert embed(ids).dtype == torch.bfloat16
    x = torch.randn(7, 64, dtype=torch.bfloat16)
    exact = x.float() @ reference.T
    int8_fast = Int8Linear(int8_rows(f, info), torch.bfloat16, None)
    for fast in (Int4Linear(int4_table(grouped), torch.bfloat16, None), int8_fast):
        head = RefinedHead(fast, grouped, refine=16)
        with torch.inference_mode():
            got = head(x)
        assert got.dtype == torch.float32 and got.shape == (7, 320)
        # the best candidates are recomputed in float32: the winner and its logit are exact
        assert torch.equal(got.argmax(-1), exact.argmax(-1))
        torch.testing.assert_close(got.amax(-1), exact.amax(-1), rtol=1e-5, atol=1e-4)
        # without the refinement (the bf16 matmul alone) the logits are far coarser
        rough = head.fast(x).float()
        assert (rough - exact).abs().amax() > 100 * (got.amax(-1) - exact.amax(-1)).abs().amax()


@pytest.mark.parametrize("width", [49152, 300])  # block maxima / plain topk (too few blocks)
def test_top_candidates_are_the_topk_set(width: int) -> None:
    y = torch.randn(3, width, generator=torch.Generator().manual_seed(width))
    y[1, -5:] = 50.0  # a cluster of winners in one block
    got = top_candidates(y, 16)
    assert got.shape == (3, 16)
    for row, want in zip(got, y.topk(16, dim=-1).indices, strict=True):
        assert set(row.tolist()) == set(want.tolist())


def test_cat_of_mixed_kinds_becomes_int8() -> None:
    w = torch.randn(64, 64)
    both = QuantizedWeight.cat([quantize_int4(w), quantize_int8(w)])
    assert both.kind == "int8" and both.shape == (128, 64)


# -- a tiny model written as a quantized GGUF ---------------------------------------------


@pytest.fixture(scope="module")
def tiny_q4(tiny_model: Path, tmp_path_factory) -> Path:
    """The tiny SmolLM3 with its matrices stored as Q4_1 / Q8_0 (embedding) blocks."""
    plain = _tiny_gguf(tiny_model, tmp_path_factory.mktemp("q") / "plain.gguf")
    f = GGUFFile(plain)
    tensors: dict = {}
    for info in f.tensors:
        arr = f.tensor(info).numpy()
        if arr.ndim == 2:
            qtype = T.Q8_0 if info.name == "token_embd.weight" else T.Q4_1
            tensors[info.name.replace(".", "__")] = (gguf.quants.quantize(arr, qtype), qtype)
    return _tiny_gguf(tiny_model, plain.with_name("q4.gguf"), **tensors)


@pytest.fixture(scope="module")
def tiny_engines(tiny_q4: Path):
    fast = smolchat.load(str(tiny_q4), device="cpu", dtype="bfloat16")
    exact = smolchat.load(str(tiny_q4), device="cpu", exact=True)
    return fast, exact


def test_gguf_on_cpu_stays_quantized(tiny_engines) -> None:
    fast, exact = tiny_engines
    layer = fast.model.model.layers[0]
    assert isinstance(layer.self_attn.qkv_proj, Int4Linear)
    assert isinstance(layer.mlp.down_proj, Int4Linear)
    assert isinstance(fast.model.model.embed_tokens, Int8Embedding)
    assert isinstance(fast.model.lm_head, RefinedHead)
    assert fast.model.lm_head.table is fast.model.model.embed_tokens.table  # tied
    assert fast.quantize == "int4 (GGUF Q4_1)"
    assert fast.dtype == torch.bfloat16
    assert isinstance(exact.model.model.layers[0].self_attn.qkv_proj, torch.nn.Linear)
    assert exact.dtype == torch.float32 and exact.quantize is None


def test_explicit_float32_is_the_exact_path(tiny_q4: Path) -> None:
    engine = smolchat.load(str(tiny_q4), device="cpu", dtype="float32")
    assert isinstance(engine.model.model.layers[0].mlp.down_proj, torch.nn.Linear)
    kept = smolchat.load(str(tiny_q4), device="cpu", dtype="float32", exact=False)
    assert isinstance(kept.model.model.layers[0].mlp.down_proj, Int4Linear)
    assert kept.dtype == torch.float32  # int4 weights, float32 activations


def test_quantized_logits_close_to_exact(tiny_engines) -> None:
    fast, exact = tiny_engines
    ids = list(range(5, 60))
    a, b = fast.logits(ids), exact.logits(ids)
    # the same 4-bit weights; only bf16 activations and bf16 block scales differ
    rel = (a - b).norm() / b.norm()
    assert rel < 0.03, rel
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() > 0.9


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cpu_step_equals_the_general_forward(tiny_q4: Path, dtype: str) -> None:
    engine = smolchat.load(str(tiny_q4), device="cpu", dtype=dtype, exact=False)
    assert engine.cpu is not None
    ids = list(range(5, 40))
    logits = engine._prefill(ids, GenerationStats())
    stepped = [engine._step(int(logits.argmax()))]
    for _ in range(5):
        stepped.append(engine._step(int(stepped[-1].argmax())))
    tokens = [int(logits.argmax())] + [int(s.argmax()) for s in stepped[:-1]]
    full = engine.logits(ids + tokens)[len(ids) :]  # general forward, no cache
    tol = 1e-4 if dtype == "float32" else 0.05
    got = torch.stack([s.float() for s in stepped])
    assert (got - full).abs().max() / full.abs().max() < tol


def test_unkept_type_is_dequantized_with_a_note(tiny_model: Path, tmp_path: Path, caplog) -> None:
    # Q3_K needs rows of 256: the MLP is widened to 256 (zeros, except one Q3_K down_proj)
    rng = np.random.default_rng(0)
    gate = np.zeros((256, 64), np.float32)
    path = _tiny_gguf(
        tiny_model,
        tmp_path / "q3.gguf",
        meta={"smollm3.feed_forward_length": 256},
        blk__0__ffn_down__weight=(_k_blocks(T.Q3_K, 64, rng).reshape(64, -1), T.Q3_K),
        **{f"blk__{i}__ffn_{p}__weight": gate for i in range(4) for p in ("gate", "up")},
        **{f"blk__{i}__ffn_down__weight": np.zeros((64, 256), np.float32) for i in range(1, 4)},
    )
    with caplog.at_level(logging.WARNING):
        engine = smolchat.load(str(path), device="cpu", dtype="bfloat16")
    notes = [r.getMessage() for r in caplog.records if "Q3_K" in r.getMessage()]
    assert len(notes) == 1 and "\n" not in notes[0] and "dequantized" in notes[0]
    down0 = engine.model.model.layers[0].mlp.down_proj
    assert isinstance(down0, torch.nn.Linear) and down0.weight.dtype == torch.bfloat16


def test_nf4_on_a_gguf_says_what_it_does(tiny_q4: Path, caplog) -> None:
    pytest.importorskip("bitsandbytes")
    with caplog.at_level(logging.WARNING):
        smolchat.load(str(tiny_q4), device="cpu", quantize="nf4")
    assert any("re-quantizes" in r.getMessage() for r in caplog.records)


def test_cpu_without_bf16_falls_back_to_float32_with_a_note(monkeypatch, caplog) -> None:
    from smolchat.model import device as loader

    monkeypatch.setattr(loader, "cpu_has_bf16", lambda: False)
    monkeypatch.setattr(loader, "_NOTED", set())
    with caplog.at_level(logging.WARNING):
        assert loader.pick_dtype("auto", torch.device("cpu")) == torch.float32
    assert any("AVX-512 BF16" in r.getMessage() for r in caplog.records)
    monkeypatch.setattr(loader, "cpu_has_bf16", lambda: True)
    assert loader.pick_dtype("auto", torch.device("cpu")) == torch.bfloat16


# -- the real SmolLM2 (Q4_1 + Q8_0 GGUF) ---------------------------------------------------

TEXT = (
    "The history of the city begins with a small settlement on the river, where fishermen "
    "and traders met to exchange goods. Over the centuries the village grew into a market "
    "town, then into a regional capital with a cathedral, a university and a busy port. "
    "Its people built bridges, canals and wide avenues lined with trees. In the nineteenth "
    "century the railway arrived and factories rose along the banks, bringing workers from "
    "the countryside and from abroad. Today the city is known for its museums, its parks and "
    "its food: bread from the morning bakeries, cheese from the hills, wine from the valleys "
    "to the south. Students fill the cafes near the old university, and tourists walk the "
    "narrow streets of the medieval quarter. "
)


@pytest.fixture(scope="module")
def real_fast(smollm2_gguf: Path):
    engine = smolchat.load(str(smollm2_gguf), device="cpu")
    # auto on a quantized GGUF: float32 activations, the int4/int8 kernels in bf16
    assert engine.dtype == torch.float32 and engine.quantize == "int4 (GGUF Q4_1)"
    return engine


def test_real_weights_stay_small(real_fast, smollm2_gguf: Path) -> None:
    model = real_fast.model
    table = model.model.embed_tokens.table
    tensors = [*model.parameters(), *model.buffers(), table.codes, table.scales]
    held = sum(
        {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}.values()
    )
    assert 90 * 2**20 < held <= 1.5 * smollm2_gguf.stat().st_size, held


def test_real_top1_agreement_with_exact_path(real_fast, smollm2_gguf: Path) -> None:
    exact = smolchat.load(str(smollm2_gguf), device="cpu", exact=True)
    ids = real_fast.tokenizer.encode(TEXT * 4)[:512]
    assert len(ids) == 512
    a, b = real_fast.logits(ids), exact.logits(ids)
    agreement = (a.argmax(-1) == b.argmax(-1)).float().mean().item()
    assert agreement >= 0.98, agreement


def test_real_greedy_answer_says_paris(real_fast) -> None:
    ids = real_fast.tokenizer.encode_chat(QUESTION)
    events = list(real_fast.generate(ids, SamplingParams(temperature=0.0), max_new_tokens=24))
    assert "Paris" in "".join(e.text for e in events)
    assert real_fast.cpu is not None and isinstance(real_fast.cpu, CPUDecoder)
