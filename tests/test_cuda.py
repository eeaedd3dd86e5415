"""The fast decode path (smolchat.engine.fast).

On any machine: the static-input step (device position, K/V written with index_put, attention
over the whole cache bucket with a mask) and the engine's run-ahead host loop give the same
tokens as plain eager decoding, across cache buckets, with NoPE and sliding-window layers.

On CUDA (skipped elsewhere): the same with CUDA graphs and torch.compile, against
transformers on the GPU (float32, tight tolerance), plus bf16, bucket growth (one capture per
doubling, well under a second), the lower-right causal prefill and the opt-out variable.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from smolchat.engine.fast import ENV_DISABLE, FUSED_TORCH_OPS, FastDecoder
from smolchat.engine.types import SamplingParams
from smolchat.model.cache import MIN_CAPACITY
from tests.interpreted import run_interpreted
from tests.test_cache import GREEDY, ids_of, load_model, make_engine, realistic, tokens
from tests.tiny import build_smollm3

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CASES = {
    "nope-gqa-tied": dict(),
    "sliding-window": dict(sliding_window=40, no_rope_layers=[1, 0, 1, 0]),
    "llama-mqa-untied": dict(arch="llama", kv_heads=1, tie=False),
    "yarn": dict(
        rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32},
        max_pos=1024,
    ),
}
SAMPLERS = {
    "greedy": GREEDY,
    "penalty": SamplingParams(temperature=0.0, repetition_penalty=1.3),
    "sampled": SamplingParams(temperature=0.9, top_k=40, top_p=0.9, min_p=0.02, seed=5),
}


@pytest.fixture(scope="module", params=list(CASES), ids=list(CASES))
def folder(request, tmp_path_factory):
    return build_smollm3(
        tmp_path_factory.mktemp(request.param), with_tokenizer=False, **CASES[request.param]
    )


def _fused(fast: FastDecoder) -> None:
    """Use the Inductor-shaped attention (reductions) even when not compiling."""
    fast.torch_ops = FUSED_TORCH_OPS


# --- everywhere: the static step and the host loop ---------------------------------------


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_static_step_decodes_like_eager(folder, sampler):
    model = load_model(folder)
    eager, fast = make_engine(model), make_engine(model, fast=True)
    assert fast.fast is not None and fast.fast.mode == "static-step"
    vocab = model.config.vocab_size
    prompt = ids_of(MIN_CAPACITY - 10, vocab, 1)  # the reply crosses into the next bucket
    want = tokens(eager, prompt, 30, SAMPLERS[sampler])
    got = tokens(fast, prompt, 30, SAMPLERS[sampler])
    assert got == want
    assert fast.cache.capacity == 2 * MIN_CAPACITY
    assert fast.cached_ids == eager.cached_ids == prompt + want[:-1]
    follow = prompt + want + ids_of(7, vocab, 2)  # a follow-up turn reuses the cache
    assert tokens(fast, follow, 12, SAMPLERS[sampler]) == tokens(
        eager, follow, 12, SAMPLERS[sampler]
    )
    assert fast.last_stats.cached_tokens == len(prompt) + len(want) - 1


@torch.inference_mode()
def test_fused_attention_step_matches_a_full_forward(folder):
    model = load_model(folder)
    engine = make_engine(model, fast=True)
    _fused(engine.fast)
    ids = ids_of(90, model.config.vocab_size, 3)
    engine.cache.ensure_capacity(len(ids) + 1)
    model(torch.tensor([ids[:-1]]), engine.cache, 0)
    engine.cache.length = len(ids) - 1
    engine.fast.start(len(ids) - 1)
    engine.fast.stage(torch.tensor([ids[-1]]))
    engine.fast.step()
    expected = model(torch.tensor([ids]))[0, -1]
    assert (engine.fast.logits[0] - expected).abs().max().item() <= 2e-4
    assert engine.fast.pos.item() == len(ids)  # the step advances its own position
    assert engine.fast.tok.item() == int(expected.argmax())  # and feeds its greedy pick


def test_stop_token_is_not_fed_and_cancel_ends_within_a_token(folder):
    model = load_model(folder)
    engine = make_engine(model, fast=True)
    prompt = ids_of(20, model.config.vocab_size, 4)
    free_run = tokens(engine, prompt, 10)
    stop = free_run[4]
    events = list(engine.generate(prompt, GREEDY, max_new_tokens=10, stop_ids=[stop]))
    first = free_run.index(stop)
    assert events[-1].finish_reason == "stop" and events[-1].token_id == stop
    assert engine.cached_ids == prompt + free_run[:first]  # the stop token's K/V is unused
    gen = engine.generate(prompt, GREEDY, max_new_tokens=50, stop_ids=[])
    next(gen)
    engine.cancel()
    rest = list(gen)
    assert rest[-1].finish_reason == "cancelled" and len(rest) <= 2


def test_triton_step_matches_a_full_forward_in_the_interpreter(tmp_path_factory):
    """The Triton step the GPU captures (the model's decode step with our kernels), run by
    Triton's CPU interpreter: NoPE + GQA, a sliding window, Llama with MQA."""
    pytest.importorskip("triton")
    names = ("nope-gqa-tied", "sliding-window", "llama-mqa-untied")
    folders = [
        str(build_smollm3(tmp_path_factory.mktemp(n), with_tokenizer=False, **CASES[n]))
        for n in names
    ]
    results = run_interpreted("tests.triton_step_check", *folders)
    for folder in folders:
        r = results[folder]
        assert r["mode"] == "triton" and r["greedy_and_pos"], r
        assert r["max_abs"] <= 1e-3, r


# --- CUDA: graphs, compile, against transformers -------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _enough_recompiles():
    import torch._dynamo

    cfg = torch._dynamo.config
    name = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
    old = getattr(cfg, name)
    setattr(cfg, name, 64)  # many tiny shapes in one process
    yield
    setattr(cfg, name, old)


@cuda
@pytest.mark.parametrize("kernels", ["triton", "inductor"])
@torch.inference_mode()
def test_cuda_graph_step_matches_transformers(folder, kernels, request):
    import transformers

    if kernels == "inductor" and not request.node.callspec.id.startswith("nope-gqa-tied"):
        pytest.skip("one Inductor compile keeps the GPU run short")
    model = load_model(folder, "cuda", torch.float32)
    engine = make_engine(model, fast=False)
    engine.fast = FastDecoder(model, engine.cache, compile=kernels == "inductor", kernels=kernels)
    _fused(engine.fast)
    ref = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    ref = ref.to("cuda").eval()
    ids = ids_of(MIN_CAPACITY + 40, model.config.vocab_size, 5)
    expected = ref(torch.tensor([ids], device="cuda")).logits[0]
    start = MIN_CAPACITY - 8  # steps cross into the next bucket: a second capture
    engine.cache.ensure_capacity(start + 1)
    model(torch.tensor([ids[:start]], device="cuda"), engine.cache, 0)
    engine.cache.length = start
    engine.fast.start(start)
    worst = 0.0
    for pos in range(start, len(ids)):
        engine.cache.ensure_capacity(pos + 1)
        engine.fast.stage(torch.tensor([ids[pos]], device="cuda"))
        engine.fast.step()
        engine.cache.length = pos + 1
        worst = max(worst, (engine.fast.logits[0] - expected[pos]).abs().max().item())
    assert worst <= 1e-3
    want = {"triton": "cuda-graph+triton", "inductor": "cuda-graph+compile+triton-attention"}
    assert engine.fast.mode == want[kernels]
    assert [cap for cap, _ in engine.fast.captures] == [MIN_CAPACITY, 2 * MIN_CAPACITY]
    assert engine.fast.captures[-1][1] < 1.0  # re-capture after a doubling: no recompile


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@torch.inference_mode()
def test_cuda_triton_kernels_match_torch(dtype):
    from smolchat.engine import kernels as K
    from smolchat.model.rope import apply_rotary

    tol = 1e-4 if dtype == torch.float32 else 3e-2
    g = torch.Generator(device="cuda").manual_seed(0)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, device="cuda", generator=g) * scale).to(dtype)

    c, n, inter = 2048, 3072, 1408
    x, nw, res = rnd(c), 1 + rnd(c, scale=0.1), rnd(c)
    w, wgu, wd = rnd(n, c, scale=0.02), rnd(2 * inter, c, scale=0.02), rnd(c, inter, scale=0.02)
    h = F.rms_norm(x, (c,), nw, 1e-6)
    for cfg in K.GEMV_CONFIGS:
        got = K.gemv(x, w, norm=nw, config=cfg)
        assert (got.float() - F.linear(h, w).float()).abs().max().item() <= tol * 10
        gu = F.linear(h, wgu)
        got = K.gemv(x, wgu, norm=nw, gated=True, config=cfg)
        want = F.silu(gu[:inter]) * gu[inter:]
        assert (got.float() - want.float()).abs().max().item() <= tol * 10
        a = rnd(inter)
        got = K.gemv(a, wd, res=res, config=cfg)
        assert (got.float() - (res + F.linear(a, wd)).float()).abs().max().item() <= tol * 10
    heads, kv, d = 16, 4, 128
    att = K.DecodeAttention(heads, kv, d, torch.device("cuda"))
    inv_freq = 1.0 / (5e6 ** (torch.arange(0, d, 2, device="cuda").float() / d))
    for s, pos, window in ((256, 0, None), (1024, 700, None), (16384, 9000, None), (512, 300, 64)):
        qkv = rnd((heads + 2 * kv) * d)
        kc, vc = rnd(1, kv, s, d), rnd(1, kv, s, d)
        kref, vref = kc.clone(), vc.clone()
        y = att(
            qkv,
            kc,
            vc,
            torch.tensor([pos], device="cuda"),
            inv_freq,
            use_rope=True,
            window=window,
            rope_scaling=1.0,
        )
        q, k, v = qkv.split((heads * d, kv * d, kv * d))
        freqs = torch.tensor([pos], device="cuda").float()[:, None] * inv_freq[None, :]
        emb = torch.cat((freqs, freqs), -1)
        q = apply_rotary(q.view(1, heads, 1, d), emb.cos(), emb.sin())
        k = apply_rotary(k.view(1, kv, 1, d), emb.cos(), emb.sin())
        kref[:, :, pos], vref[:, :, pos] = k[:, :, 0], v.view(1, kv, d)
        k_pos = torch.arange(s, device="cuda")
        valid = k_pos <= pos
        if window:
            valid &= k_pos > pos - window
        want = F.scaled_dot_product_attention(
            q.float(), kref.float(), vref.float(), attn_mask=valid, enable_gqa=True
        ).reshape(-1)
        assert (y.float() - want).abs().max().item() <= tol
        assert torch.equal(vc, vref) and (kc.float() - kref.float()).abs().max() <= tol


@cuda
def test_cuda_greedy_generation_matches_transformers(folder):
    import transformers

    model = load_model(folder, "cuda", torch.float32)
    engine = make_engine(model, fast=True)
    assert engine.fast is not None and engine.fast.graphs
    ref = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    ref = ref.to("cuda").eval()
    prompt = ids_of(40, model.config.vocab_size, 6)
    want = ref.generate(
        torch.tensor([prompt], device="cuda"),
        max_new_tokens=40,
        min_new_tokens=40,
        do_sample=False,
        pad_token_id=0,
    )[0, 40:].tolist()
    assert tokens(engine, prompt, 40) == want


@cuda
@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_cuda_bf16_fast_path_agrees_with_eager(folder, sampler, tmp_path):
    import shutil

    shutil.copytree(folder, tmp_path / "m")
    model = load_model(realistic(tmp_path / "m"), "cuda", torch.bfloat16)  # trained-like scale
    eager, fast = make_engine(model), make_engine(model, fast=True)
    prompt = ids_of(MIN_CAPACITY - 5, model.config.vocab_size, 7)
    want = tokens(eager, prompt, 24, SAMPLERS[sampler])
    got = tokens(fast, prompt, 24, SAMPLERS[sampler])
    assert fast.fast.graph is not None and len(got) == 24
    if sampler != "sampled":  # bf16 kernels differ in rounding: allow rare late flips
        same = sum(a == b for a, b in zip(got, want, strict=True))
        assert got[:8] == want[:8] and same >= 20, (got, want)
    with torch.inference_mode():  # and the next-token logits agree closely
        expected = model(torch.tensor([prompt + got[:-1]], device="cuda"))[0, -1].float()
    diff = (fast.fast.logits[0].float() - expected).norm() / expected.norm()
    assert diff.item() < 0.02


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@torch.inference_mode()
def test_cuda_chunked_prefill_matches_one_pass(folder, dtype):
    model = load_model(folder, "cuda", dtype)
    engine = make_engine(model)
    ids = ids_of(300, model.config.vocab_size, 8)
    whole = model(torch.tensor([ids], device="cuda"))[0]
    engine.cache.ensure_capacity(len(ids))
    parts = []
    for start in range(0, len(ids), 70):  # chunks after cached tokens: lower-right causal
        chunk = torch.tensor([ids[start : start + 70]], device="cuda")
        parts.append(model(chunk, engine.cache, start)[0])
        engine.cache.length = start + chunk.shape[1]
    tol = 1e-3 if dtype == torch.float32 else 0.1 * whole.abs().max().item()
    assert (torch.cat(parts) - whole).abs().max().item() <= tol


@cuda
def test_env_var_turns_the_fast_path_off(folder, monkeypatch):
    model = load_model(folder, "cuda", torch.bfloat16)
    assert make_engine(model, fast=None).fast is not None
    monkeypatch.setenv(ENV_DISABLE, "1")
    engine = make_engine(model, fast=None)
    assert engine.fast is None
    assert len(tokens(engine, ids_of(10, model.config.vocab_size, 9), 5)) == 5
