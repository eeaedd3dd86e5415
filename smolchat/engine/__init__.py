"""Token ids in, token ids out: sampling, the prefill/decode loop, streaming events."""

from smolchat.engine.types import GenerationEvent, GenerationStats, PrefillProgress, SamplingParams

__all__ = ["GenerationEvent", "GenerationStats", "PrefillProgress", "SamplingParams"]
