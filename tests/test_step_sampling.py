"""Sampling inside the decode step (FastDecoder.set_sampling): the eager sampler's distribution,
reproducible from the seed, and on CUDA inside a captured graph.

The statistical test draws 20,000 tokens from a hand-made distribution (temperature, top-k,
top-p, min-p and a repetition penalty all active) and compares the counts with the exact
probabilities of the eager sampler's own functions (chi-square at p = 0.001; tokens the
filters remove must never appear). On CUDA the draws are replays of one CUDA graph.
"""

from __future__ import annotations

import math

import pytest
import torch

from smolchat.engine.sampling import (
    apply_repetition_penalty,
    apply_repetition_penalty_mask,
    filter_logits,
    pick,
    scale_logits,
    seeded,
)
from smolchat.engine.types import SamplingParams

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEVICES = ["cpu", pytest.param("cuda", marks=cuda)]
PARAMS = SamplingParams(temperature=0.8, top_k=25, top_p=0.9, min_p=0.03, repetition_penalty=1.3)
SEEN = [1, 3, 5, 30]
DRAWS = 20_000


def hand_made_logits(device: str) -> torch.Tensor:
    """40 logits: a few strong tokens, a slope, some negative ones (the penalty multiplies)."""
    v = torch.linspace(3.0, -4.0, 40)
    v[[1, 3]] = torch.tensor([4.0, 3.5])  # strong and seen: penalized
    v[30] = -0.5  # negative and seen: pushed further down
    return v.to(device)


def expected_probs(logits: torch.Tensor) -> torch.Tensor:
    """The eager sampler's probabilities (its own functions, the host list of seen ids)."""
    seen = torch.tensor(SEEN, device=logits.device)
    scores = apply_repetition_penalty(logits.float(), seen, PARAMS.repetition_penalty)
    return torch.softmax(filter_logits(scale_logits(scores, PARAMS.temperature), PARAMS), -1)


def step_draw(logits: torch.Tensor, mask: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """What the decode step does (FastDecoder._pick)."""
    scores = apply_repetition_penalty_mask(logits.float(), mask, PARAMS.repetition_penalty)
    return pick(scores, PARAMS, gen)


def draws(device: str, seed: int, n: int) -> torch.Tensor:
    logits = hand_made_logits(device)
    mask = torch.zeros(40, dtype=torch.bool, device=device)
    mask[SEEN] = True
    gen = seeded(torch.Generator(device=device), PARAMS.with_(seed=seed))
    if device == "cpu":
        return torch.cat([step_draw(logits, mask, gen) for _ in range(n)])
    out = torch.empty(1, dtype=torch.long, device=device)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step_draw(logits, mask, gen)  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(side)
    gen = seeded(gen, PARAMS.with_(seed=seed))
    graph = torch.cuda.CUDAGraph()
    graph.register_generator_state(gen)
    with torch.cuda.graph(graph):
        out.copy_(step_draw(logits, mask, gen))
    got = []
    for _ in range(n):
        graph.replay()
        got.append(out.clone())
    return torch.cat(got)


def chi_square_ok(counts: torch.Tensor, probs: torch.Tensor) -> tuple[bool, float, float]:
    expected = probs * counts.sum()
    big = expected >= 5
    stat = (((counts - expected) ** 2) / expected)[big].sum().item()
    df = int(big.sum().item()) - 1
    z = 3.09  # one-sided p = 0.001; Wilson-Hilferty approximation of the chi-square quantile
    crit = df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3
    return stat < crit, stat, crit


@pytest.mark.parametrize("device", DEVICES)
def test_the_step_draws_the_eager_samplers_distribution(device):
    probs = expected_probs(hand_made_logits(device)).double().cpu()
    assert (probs > 0).sum() >= 8 and (probs == 0).sum() >= 10  # every filter bites
    got = draws(device, seed=123, n=DRAWS).cpu()
    counts = torch.bincount(got, minlength=40).double()
    assert counts[probs == 0].sum() == 0, "a filtered-out token was drawn"
    ok, stat, crit = chi_square_ok(counts, probs)
    assert ok, (stat, crit)


@pytest.mark.parametrize("device", DEVICES)
def test_the_step_is_reproducible_from_the_seed(device):
    a, b, c = draws(device, 7, 300), draws(device, 7, 300), draws(device, 8, 300)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_the_chi_square_check_can_fail():
    probs = expected_probs(hand_made_logits("cpu")).double()
    skewed = probs.clone()
    top = int(skewed.argmax())
    skewed[top] *= 1.1  # a sampler 10% too fond of the top token
    counts = torch.round(skewed / skewed.sum() * DRAWS)
    assert not chi_square_ok(counts, probs)[0]


@cuda
def test_cuda_sampled_decoding_runs_inside_the_graph_and_repeats_with_its_seed(tmp_path):
    from tests.test_cache import ids_of, load_model, make_engine, tokens
    from tests.tiny import build_smollm3

    folder = build_smollm3(tmp_path / "m", with_tokenizer=False)
    model = load_model(folder, "cuda", torch.bfloat16)
    engine = make_engine(model, fast=True)
    prompt = ids_of(40, model.config.vocab_size, 3)
    p = SamplingParams(temperature=0.9, top_k=40, top_p=0.9, min_p=0.02, repetition_penalty=1.2)
    first = tokens(engine, prompt, 24, p.with_(seed=5))
    fast = engine.fast
    assert fast is not None and fast.graph is not None
    assert fast.sampling is not None and not fast.sample_in_graph_failed  # sampled in-graph
    assert tokens(engine, prompt, 24, p.with_(seed=5)) == first
    assert tokens(engine, prompt, 24, p.with_(seed=6)) != first
