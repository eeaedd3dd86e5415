"""Sampling on hand-made distributions."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from smolchat.engine.sampling import (
    apply_repetition_penalty,
    argmax,
    filter_logits,
    make_sampler,
)
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


@pytest.mark.parametrize("where", [0, 63, 64, 1000, 49151])
def test_block_argmax_is_the_first_maximum_of_a_long_row(where: int) -> None:
    gen = torch.Generator().manual_seed(where)
    logits = torch.randn(49152, generator=gen)
    logits[where] = 10.0
    assert argmax(logits).tolist() == [where]
    logits[49151] = logits[where + 1 if where < 49151 else 0] = 10.0  # ties: the first one
    assert argmax(logits).tolist() == logits.argmax(-1, keepdim=True).tolist()
    logits[777] = float("nan")  # NaN counts as the maximum, as in torch.argmax
    assert argmax(logits).tolist() == logits.argmax(-1, keepdim=True).tolist() == [777]


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


# --- never NaN: every value the settings accept gives a valid token (issue 10, item 3) ---

F32 = torch.finfo(torch.float32)


@pytest.mark.parametrize("temperature", [1e-45, 1e-40, 1e-30, 1e-8, 5e-6])
def test_a_tiny_temperature_decodes_greedily(temperature):
    # 12.5 / 1e-40 overflows float32: the old sampler fed inf/nan to multinomial
    logits = torch.tensor([3.0, 12.5, -4.0, 12.0])
    sample = make_sampler(SamplingParams(temperature=temperature, seed=0), torch.device("cpu"))
    assert [sample(logits, None).item() for _ in range(5)] == [1] * 5


def test_tiny_temperature_counts_as_greedy():
    assert SamplingParams(temperature=1e-40).greedy
    assert not SamplingParams(temperature=0.01).greedy


@pytest.mark.parametrize(
    "settings",
    [
        dict(temperature=1e-4, top_p=1e-9),
        dict(temperature=1.0, min_p=1.0),
        dict(temperature=1.0, top_k=1_000_000),
        dict(temperature=10.0, repetition_penalty=0.01),
        dict(temperature=1e-4, repetition_penalty=10.0, top_p=1e-9, min_p=1.0, top_k=1),
    ],
)
def test_extreme_filters_on_extreme_logits_give_a_token(settings):
    logits = torch.tensor([F32.max, F32.min, 0.0, -F32.max, 3.0e38, F32.min])
    sample = make_sampler(SamplingParams(**settings, seed=0), torch.device("cpu"))
    seen = torch.tensor([0, 1, 3])
    token = sample(logits, seen).item()
    assert 0 <= token < logits.numel()


finite_f32 = st.floats(
    min_value=-F32.max, max_value=F32.max, allow_nan=False, allow_infinity=False, width=32
)


@st.composite
def logits_and_seen(draw):
    vocab = draw(st.integers(1, 40))
    values = draw(
        st.lists(
            st.one_of(finite_f32, st.floats(-50, 50, width=32), st.just(F32.min)),
            min_size=vocab,
            max_size=vocab,
        )
    )
    seen = draw(st.none() | st.lists(st.integers(0, vocab - 1), max_size=2 * vocab))
    seen_t = None if seen is None else torch.tensor(seen, dtype=torch.long)
    return torch.tensor(values, dtype=torch.float32), seen_t


def accepted(name):
    low, high = SamplingParams.RANGES[name]
    if name == "top_k":
        return st.integers(int(low), int(high))
    if name == "top_p":
        return st.floats(low, high, exclude_min=True)  # 0 is refused up front
    return st.floats(low, high)


@settings(max_examples=300, deadline=None)
@given(
    data=logits_and_seen(),
    params=st.builds(
        SamplingParams,
        temperature=accepted("temperature"),
        top_p=accepted("top_p"),
        top_k=accepted("top_k"),
        min_p=accepted("min_p"),
        repetition_penalty=accepted("repetition_penalty"),
        seed=st.just(0),
    ),
)
def test_every_accepted_setting_samples_a_valid_token(data, params):
    logits, seen = data
    token = make_sampler(params, torch.device("cpu"))(logits, seen)
    assert token.shape == (1,)
    assert 0 <= int(token.item()) < logits.numel()
