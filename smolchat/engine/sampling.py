"""Token sampling: a sampler is built once from SamplingParams and called per step.

Everything stays on the logits' device; the only host sync is reading the chosen id.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from smolchat.engine.types import SamplingParams

Sampler = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


def apply_repetition_penalty(
    logits: torch.Tensor, seen: torch.Tensor, penalty: float
) -> torch.Tensor:
    """Divide positive / multiply negative logits of ``seen`` ids by ``penalty`` (CTRL style)."""
    if penalty == 1.0 or seen.numel() == 0:
        return logits
    picked = logits.gather(-1, seen)
    picked = torch.where(picked > 0, picked / penalty, picked * penalty)
    return logits.scatter(-1, seen, picked)


def filter_logits(logits: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    """Mask tokens outside top-k, then top-p, then min-p (transformers' order); (V,) float32."""
    neg_inf = torch.finfo(logits.dtype).min
    if p.top_k > 0 and p.top_k < logits.shape[-1]:
        kth = torch.topk(logits, p.top_k).values[..., -1, None]
        logits = logits.masked_fill(logits < kth, neg_inf)
    if p.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        # drop a token when the mass before it already reaches top_p (the top one always stays)
        drop = (cumulative - torch.softmax(sorted_logits, dim=-1)) >= p.top_p
        drop[..., 0].fill_(False)  # (a kernel, not a host copy: CUDA graphs hold this)
        logits = logits.masked_fill(drop.scatter(-1, order, drop), neg_inf)
    if p.min_p > 0.0:
        probs = torch.softmax(logits, dim=-1)
        threshold = probs.max(dim=-1, keepdim=True).values * p.min_p
        logits = logits.masked_fill(probs < threshold, neg_inf)
    return logits


def scale_logits(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``logits / temperature``, shifted so the best token is 0: float32 (V,), never NaN.

    Non-finite entries are clamped first (a repetition penalty can overflow a huge logit), so
    every entry is finite before the shift, the best is exactly 0 and the rest are <= 0 (or
    -inf, which softmax treats as probability 0). Any temperature > 0 is safe.
    """
    finfo = torch.finfo(logits.dtype)
    logits = torch.nan_to_num(logits, nan=finfo.min, posinf=finfo.max, neginf=finfo.min)
    return (logits - logits.max(dim=-1, keepdim=True).values) / temperature


def apply_repetition_penalty_mask(
    logits: torch.Tensor, seen: torch.Tensor, penalty: float
) -> torch.Tensor:
    """:func:`apply_repetition_penalty` with the seen ids as a bool mask ``(V,)``: the same
    values, in fixed shapes (so a CUDA graph can hold it while the mask grows)."""
    if penalty == 1.0:
        return logits
    return torch.where(seen, torch.where(logits > 0, logits / penalty, logits * penalty), logits)


def pick(logits: torch.Tensor, p: SamplingParams, generator: torch.Generator | None):
    """The token for penalized float32 logits ``(V,)``: argmax when greedy, else temperature,
    top-k / top-p / min-p and a draw from ``generator``; an id tensor ``(1,)``. No host sync:
    the decode step's CUDA graph holds this too."""
    if p.greedy:
        return logits.argmax(dim=-1, keepdim=True)
    logits = filter_logits(scale_logits(logits, p.temperature), p)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)


def seeded(generator: torch.Generator, p: SamplingParams) -> torch.Generator:
    """Seed ``generator`` for one generation: ``p.seed``, or fresh entropy when None."""
    if p.seed is not None:
        generator.manual_seed(p.seed)
    else:
        generator.seed()
    return generator


ARGMAX_BLOCK = 64


def argmax(logits: torch.Tensor) -> torch.Tensor:
    """``logits.argmax(-1, keepdim=True)`` for (V,) logits: the id tensor (1,).

    On the CPU through the maxima of blocks of 64: the first block holding the maximum, then
    its first maximum, which is the first maximum overall (NaN counts as the maximum, as in
    ``argmax``). ~8x faster than ``argmax`` on a 49152-wide row (measured: 12 vs 100 us).
    """
    v = logits.shape[-1]
    if logits.device.type != "cpu" or logits.dim() != 1 or v % ARGMAX_BLOCK or v < 4096:
        return logits.argmax(dim=-1, keepdim=True)
    blocks = logits.view(-1, ARGMAX_BLOCK)
    b = int(blocks.amax(-1).argmax())
    return torch.tensor([b * ARGMAX_BLOCK + int(blocks[b].argmax())], device=logits.device)


def make_sampler(
    p: SamplingParams, device: torch.device, generator: torch.Generator | None = None
) -> Sampler:
    """Return ``sample(logits (V,), seen_ids | None) -> id tensor (1,)``.

    Never NaN for any settings :class:`SamplingParams` accepts: temperatures below
    ``GREEDY_BELOW`` decode greedily, and the scaled logits are always finite at the top.
    ``generator`` (on ``device``): draw from this one (seeded here), e.g. the fast decoder's,
    whose CUDA graph then continues the same random stream.
    """
    if not p.greedy:
        generator = seeded(generator or torch.Generator(device=device), p)

    def sample(logits: torch.Tensor, seen: torch.Tensor | None) -> torch.Tensor:
        logits = logits.float()
        if seen is not None:
            logits = apply_repetition_penalty(logits, seen, p.repetition_penalty)
        return pick(logits, p, generator)

    return sample
