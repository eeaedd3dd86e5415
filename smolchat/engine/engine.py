"""The engine: token ids in, token ids out, with a reusable KV cache.

``generate`` crops the cache to the longest common prefix with the new ids, prefills only
the rest in chunks of ``Engine.prefill_chunk`` tokens (each chunk attends to the cache the
chunks before it wrote; with ``progress=True`` a :class:`PrefillProgress` follows each one),
then decodes one token at a time, streaming events.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from typing import Any

import torch

from smolchat.engine.cpu import CPUDecoder, cpu_step_enabled
from smolchat.engine.fast import FastDecoder, fast_path_enabled
from smolchat.engine.sampling import make_sampler
from smolchat.engine.types import (
    FinishReason,
    GenerationEvent,
    GenerationStats,
    PrefillProgress,
    SamplingParams,
)
from smolchat.errors import ContextOverflowError, SmolchatError
from smolchat.model.cache import KVCache
from smolchat.model.config import ModelConfig
from smolchat.model.network import CausalLM

# Tokens per prefill forward (long prompts go in chunks; progress is reported per chunk). Each
# forward has a fixed cost (int4 CPU weights: ~3.8 s on the loaded 2-core box, vs ~11.5 ms a
# token), so small chunks are dear: 512-token chunks made a 2048-token SmolLM2 GGUF prefill
# 2.9x slower there, and 1.66x slower on an H200 (SmolLM3-3B shape, 8192 tokens); 2048 on the
# CPU should cost ~1.1x on an 8k prompt (estimated from those two figures, not measured).
# `python benchmarks/prefill_chunks.py` measures it.
PREFILL_CHUNK = 8192
PREFILL_CHUNK_CPU = 2048
ENV_PREFILL_CHUNK = "SMOLCHAT_PREFILL_CHUNK"  # overrides both (a whole number >= 1)

log = logging.getLogger(__name__)


def prefill_chunk_size(device: torch.device) -> int:
    """Tokens per prefill forward on ``device``: ``$SMOLCHAT_PREFILL_CHUNK`` if set, else
    PREFILL_CHUNK_CPU on the CPU and PREFILL_CHUNK elsewhere.

    Raises SmolchatError (one line) for a value that is not a whole number >= 1."""
    default = PREFILL_CHUNK_CPU if device.type == "cpu" else PREFILL_CHUNK
    raw = os.environ.get(ENV_PREFILL_CHUNK, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise SmolchatError(
            f"{ENV_PREFILL_CHUNK}={raw!r}: expected a whole number of tokens >= 1 "
            f"(default here {default})"
        )
    return int(raw)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class Engine:
    """A loaded model plus its tokenizer, KV cache and generation loop."""

    def __init__(
        self,
        model: CausalLM,
        tokenizer: Any,
        *,
        model_name: str = "",
        eos_token_ids: Sequence[int] = (),
        generation_defaults: dict[str, Any] | None = None,
        quantize: str | None = None,
        fast: bool | None = None,
    ) -> None:
        """``fast``: use the static-step decoder (CUDA graphs on CUDA); None = on CUDA unless
        ``SMOLCHAT_NO_CUDA_GRAPHS`` is set."""
        self.model = model
        self.config: ModelConfig = model.config
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.quantize = quantize
        self.generation_defaults = dict(generation_defaults or {})
        self.eos_token_ids = sorted(set(eos_token_ids))
        ref = model.model.embed_tokens.weight
        self.device, self.dtype = ref.device, ref.dtype
        self.context_length = self.config.max_position_embeddings
        self.cache = KVCache(self.config, self.device, self.dtype, self.context_length)
        if fast is None:
            fast = fast_path_enabled(self.device)
        self.fast = FastDecoder(model, self.cache) if fast else None
        self.cpu = CPUDecoder(model, self.cache) if cpu_step_enabled(model, self.device) else None
        self.prefill_chunk = prefill_chunk_size(self.device)  # tokens per prefill forward
        self.cached_ids: list[int] = []
        self.last_stats: GenerationStats | None = None
        self._cancel = threading.Event()
        self._forced: collections.deque[int] = collections.deque()  # ids to emit next (force)
        self._lock = threading.Lock()

    # --- control -------------------------------------------------------------------
    def cancel(self) -> None:
        """Ask the running ``generate`` to stop; it ends within one token."""
        self._cancel.set()

    def force(self, ids: Sequence[int]) -> None:
        """Make the next tokens of the reply being generated ``ids`` instead of sampled ones
        (thread-safe). They stream and count like sampled tokens, and the model goes on after
        them (e.g. the end-of-thinking tokens that close a reasoning block early)."""
        self._forced.extend(int(i) for i in ids)

    def reset_cache(self) -> None:
        self.cache.reset()
        self.cached_ids = []
        if self.cpu is not None:
            self.cpu.forget()

    def warmup(self) -> float:
        """Compile and capture the fast decode step now (else on first use); return seconds."""
        if self.fast is None or self.fast.failed:
            return 0.0
        t0 = time.perf_counter()
        with self._lock, torch.inference_mode():
            self.cache.ensure_capacity(self.cache.length + 1)
            self.fast.start(self.cache.length)
            try:
                self.fast.prepare()
            except torch.OutOfMemoryError:
                raise
            except Exception as exc:
                log.warning("fast decode unavailable (%s); decoding eagerly", exc)
                self.fast = None
        return time.perf_counter() - t0

    # --- verification --------------------------------------------------------------
    @torch.inference_mode()
    def logits(self, ids: Sequence[int]) -> torch.Tensor:
        """One full forward pass without the cache: float32 CPU logits (len(ids), vocab)."""
        x = torch.tensor([list(ids)], dtype=torch.long, device=self.device)
        return self.model(x)[0].float().cpu()

    # --- generation ----------------------------------------------------------------
    def generate(
        self,
        ids: Sequence[int],
        sampling: SamplingParams | None = None,
        max_new_tokens: int = 256,
        stop_ids: Sequence[int] | None = None,
        *,
        progress: bool = False,
    ) -> Iterator[GenerationEvent | PrefillProgress]:
        """Stream events for the reply to ``ids``; the last event has finish_reason and stats.

        The reply ends at ``max_new_tokens`` (finish reason ``length``) or where the context
        window is full (``context``, when it comes first). ``progress=True``: a prefill of
        more than one chunk (``prefill_chunk`` tokens) also yields ``PrefillProgress(done,
        total)`` before its first chunk and after each one (``total``: the tokens the cache
        lacked). A cancel during the prefill ends it after the current chunk, with finish
        reason ``cancelled`` and no token."""
        if not self._lock.acquire(blocking=False):
            raise SmolchatError("the engine is already generating; wait for it or cancel it")
        try:
            self._cancel.clear()
            self._forced.clear()
            yield from self._generate(
                list(ids), sampling or SamplingParams(), max_new_tokens, stop_ids, progress
            )
        finally:
            self._lock.release()

    @torch.inference_mode()
    def _generate(
        self, ids, sampling, max_new_tokens, stop_ids, progress
    ) -> Iterator[GenerationEvent | PrefillProgress]:
        if not ids:
            raise SmolchatError("nothing to generate from: the prompt has no tokens")
        if max_new_tokens < 1:
            raise SmolchatError("max_new_tokens must be at least 1")
        if len(ids) >= self.context_length:
            raise ContextOverflowError(
                f"the prompt has {len(ids)} tokens but the context holds {self.context_length}; "
                "drop older turns"
            )
        room = self.context_length - len(ids)
        cut: FinishReason = "context" if room < max_new_tokens else "length"  # budget reached
        max_new_tokens = min(max_new_tokens, room)
        stops = set(self.eos_token_ids if stop_ids is None else stop_ids)
        stats = GenerationStats(prompt_tokens=len(ids))
        t0 = time.perf_counter()

        logits = None
        for step in self._prefill_steps(ids, stats):
            if isinstance(step, PrefillProgress):
                if progress:
                    yield step
                if self._cancel.is_set() and step.done < step.total:
                    stats.finish_reason = "cancelled"
                    self.last_stats = stats
                    yield GenerationEvent(None, "", "cancelled", stats)
                    return
            else:
                logits = step
        assert logits is not None
        # the fast decoder's generator: the first token is drawn here, the rest in its step
        gen = self.fast.generator() if self.fast is not None else None
        sample = make_sampler(sampling, self.device, generator=gen)
        seen = None
        if sampling.repetition_penalty != 1.0:
            seen = torch.tensor(ids, dtype=torch.long, device=self.device)
        tokens = None
        if self.fast is not None and max_new_tokens > 1:
            try:
                self.cache.ensure_capacity(self.cache.length + 1)
                self.fast.start(self.cache.length)
                self.fast.set_sampling(sampling, seen)
                self.fast.prepare()  # compile/capture now, so failures fall back cleanly
                tokens = self._fast_tokens(logits, sample, seen, sampling, max_new_tokens)
            except torch.OutOfMemoryError:
                raise
            except Exception as exc:
                log.warning("fast decode unavailable (%s); decoding eagerly", exc)
                self.fast = None
        if tokens is None:
            tokens = self._eager_tokens(logits, sample, seen)
        decoder = self.tokenizer.stream_decoder()
        t_first = None
        finish: FinishReason = "length"
        token_id = None
        try:
            for token_id in tokens:
                if stats.generated_tokens and self._cancel.is_set():
                    finish, token_id = "cancelled", None  # sampled after the cancel: dropped
                    break
                stats.generated_tokens += 1
                if t_first is None:
                    t_first = time.perf_counter()
                    stats.ttft_s = t_first - t0
                if token_id in stops:
                    finish = "stop"
                    break
                text = decoder.add(token_id)
                last = stats.generated_tokens >= max_new_tokens
                if last or self._cancel.is_set():
                    finish = cut if last else "cancelled"
                    # the token is shown but not fed: the cache holds everything before it
                    tail = decoder.flush()
                    stats.decode_s = time.perf_counter() - t_first
                    stats.finish_reason = finish
                    self.last_stats = stats
                    yield GenerationEvent(token_id, text + tail, finish, stats)
                    return
                yield GenerationEvent(token_id, text)
        finally:
            tokens.close()
        stats.decode_s = time.perf_counter() - (t_first or t0)
        stats.finish_reason = finish
        self.last_stats = stats
        final_id = token_id if finish == "stop" else None
        yield GenerationEvent(final_id, decoder.flush(), finish, stats)

    def _eager_tokens(self, logits, sample, seen) -> Generator[int, None, None]:
        """Yield sampled ids; resuming the generator feeds the last id (one forward)."""
        while True:
            if self._forced:
                token_id = self._forced.popleft()
                token = torch.tensor([token_id], dtype=torch.long, device=self.device)
            else:
                token = sample(logits, seen)  # (1,)
                token_id = int(token.item())
            yield token_id
            if seen is not None:
                seen = torch.cat([seen, token])
            logits = self._step(token_id)

    def _fast_tokens(self, logits, sample, seen, sampling, max_new) -> Generator[int, None, None]:
        """Like :meth:`_eager_tokens` on the fast decoder, one step ahead of the host.

        The step for a token is queued *before* its id reaches the host, so the GPU computes
        while the caller handles the id; resuming commits the token to the cache. A stop
        token's step is wasted (its K/V lands past ``cache.length`` and is never read).
        """
        fast = self.fast
        assert fast is not None
        in_step = fast.set_sampling(sampling, seen)  # the step picks the next token itself
        pos = self.cache.length
        fast.start(pos)
        token = sample(logits, seen)
        n = 0
        while True:
            n += 1
            if self._forced:  # replaces the sampled token, which was never staged
                token = torch.tensor([self._forced.popleft()], dtype=torch.long, device=self.device)
            fast.stage(token)
            if n < max_new:  # the last allowed token is shown, never fed
                self.cache.ensure_capacity(pos + 1)
                fast.step()
            token_id = fast.staged_id()
            yield token_id
            self.cache.length = pos + 1
            self.cached_ids.append(token_id)
            pos += 1
            if seen is not None:
                seen = torch.cat([seen, token.view(1)])
            assert fast.logits is not None
            if in_step and fast.sample_in_graph_failed:  # capture failed: sample here
                in_step = False
            token = fast.tok if in_step else sample(fast.logits[0], seen)

    def _prefill(self, ids: list[int], stats: GenerationStats) -> torch.Tensor:
        """Run the ids the cache lacks; return the logits (V,) of the last position."""
        *_, logits = self._prefill_steps(ids, stats)
        assert isinstance(logits, torch.Tensor)
        return logits

    def _prefill_steps(
        self, ids: list[int], stats: GenerationStats
    ) -> Iterator[PrefillProgress | torch.Tensor]:
        """Run the ids the cache lacks, ``prefill_chunk`` at a time (chunk k attends to the
        cache of chunks < k). Yields PrefillProgress before the first chunk and after each
        (only when there is more than one), then the logits (V,) of the last position."""
        keep = common_prefix(self.cached_ids, ids)
        if keep == len(ids):  # everything cached: recompute the last position for its logits
            keep -= 1
        self.cache.crop(keep)
        self.cached_ids = self.cached_ids[:keep]
        stats.cached_tokens = keep
        stats.prefilled_tokens = total = len(ids) - keep
        self.cache.ensure_capacity(len(ids))
        size = max(1, int(self.prefill_chunk))
        report = total > size
        if report:
            yield PrefillProgress(0, total)
        logits = None
        for start in range(keep, len(ids), size):
            chunk = ids[start : start + size]
            x = torch.tensor([chunk], dtype=torch.long, device=self.device)
            logits = self.model(x, self.cache, start, last_only=True)
            self.cache.length = start + len(chunk)
            self.cached_ids.extend(chunk)
            if report:
                yield PrefillProgress(self.cache.length - keep, total)
        assert logits is not None  # keep < len(ids): at least one chunk ran
        yield logits[0, -1]

    def _step(self, token_id: int) -> torch.Tensor:
        """Feed one token; return the next logits (V,)."""
        pos = self.cache.length
        self.cache.ensure_capacity(pos + 1)
        if self.cpu is not None:
            logits = self.cpu.step(token_id, pos)
        else:
            x = torch.tensor([[token_id]], dtype=torch.long, device=self.device)
            logits = self.model(x, self.cache, pos, last_only=True)[0, -1]
        self.cache.length = pos + 1
        self.cached_ids.append(token_id)
        return logits
