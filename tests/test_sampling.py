"""Sampling on hand-made distributions."""

from __future__ import annotations

import math

import pytest
import torch

from smolchat.engine.sampling import apply_repetition_penalty, filter_logits, make_sampler
from smolchat.engine.types import SamplingParams
from smolchat.errors import SamplingError

# probabilities 0.4, 0.3, 0.15, 0.1, 0.05
PROBS = torch.tensor([0.1, 0.4, 0.05, 0.3, 0.15])
LOGITS = PROBS.log()


def kept(params: SamplingParams) -> set[int]:
    out = filter_logits(LOGITS.clone(), params)
    return {i for i, v in enumerate(out.tolist()) if v > torch.finfo(torch.float32).min}


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (dict(top_k=1), {1}),
        (dict(top_k=3), {1, 3, 4}),
        (dict(top_p=0.4), {1}),
        (dict(top_p=0.5), {1, 3}),
        (dict(top_p=0.7), {1, 3}),  # 0.4 + 0.3 reaches 0.7 exactly
        (dict(top_p=0.71), {1, 3, 4}),
        (dict(top_p=1.0), {0, 1, 2, 3, 4}),
        (dict(min_p=0.3), {1, 3, 4}),  # threshold 0.12
        (dict(min_p=0.5), {1, 3}),  # threshold 0.2
        (dict(min_p=1.0), {1}),
        (dict(top_k=3, top_p=0.5), {1, 3}),
    ],
)
def test_filters_keep_exactly_the_right_set(settings, expected):
    params = SamplingParams(temperature=1.0, **{"top_p": 1.0, **settings})
    assert kept(params) == expected


def test_repetition_penalty_divides_positive_and_multiplies_negative():
    logits = torch.tensor([2.0, -2.0, 1.0, 0.5])
    out = apply_repetition_penalty(logits, torch.tensor([0, 1]), 2.0)
    assert out.tolist() == [1.0, -4.0, 1.0, 0.5]
    assert apply_repetition_penalty(logits, torch.tensor([0]), 1.0) is logits


def test_repetition_penalty_changes_the_greedy_choice():
    logits = torch.tensor([3.0, 2.5, 0.0])
    sample = make_sampler(SamplingParams(temperature=0.0, repetition_penalty=1.5), "cpu")
    assert sample(logits, None).item() == 0
    assert sample(logits, torch.tensor([0])).item() == 1


def test_greedy_picks_the_argmax():
    sample = make_sampler(SamplingParams(temperature=0.0), torch.device("cpu"))
    assert sample(LOGITS, None).item() == 1


def draws(params: SamplingParams, n: int = 200) -> list[int]:
    sample = make_sampler(params, torch.device("cpu"))
    return [int(sample(LOGITS, None).item()) for _ in range(n)]


def test_same_seed_same_draws_and_other_seed_differs():
    p = SamplingParams(temperature=1.0, top_p=1.0, seed=7)
    assert draws(p) == draws(p)
    assert draws(p) != draws(p.with_(seed=8))


def test_sampling_follows_the_distribution():
    picks = draws(SamplingParams(temperature=1.0, top_p=1.0, seed=1), 4000)
    counts = torch.bincount(torch.tensor(picks), minlength=5)
    freq = counts.float() / counts.sum()
    assert torch.allclose(freq, PROBS, atol=0.03)


def test_low_temperature_sharpens():
    hot = draws(SamplingParams(temperature=2.0, top_p=1.0, seed=3), 1000)
    cold = draws(SamplingParams(temperature=0.2, top_p=1.0, seed=3), 1000)
    assert cold.count(1) > hot.count(1)


@pytest.mark.parametrize(
    "bad",
    [
        dict(temperature=-0.1),
        dict(temperature=math.nan),
        dict(top_p=0.0),
        dict(top_p=1.5),
        dict(top_k=-1),
        dict(top_k=2.5),
        dict(min_p=2.0),
        dict(repetition_penalty=0.0),
        dict(seed=-1),
        dict(temperature="hot"),
    ],
)
def test_invalid_values_raise_a_clear_error(bad):
    with pytest.raises(SamplingError) as info:
        SamplingParams(**bad)
    name = next(iter(bad))
    assert name in str(info.value)
