"""smolchat serve vs in-process, in one process run on one device: time to first token and
decode tok/s of the same engine, (a) through LocalBackend directly and (b) through
``smolchat serve`` (real uvicorn on 127.0.0.1) with the official ``openai`` client streaming.

Same prompt, greedy, an empty KV cache before every run (TTFT includes the whole prefill), the
two paths interleaved, best of ``--runs``. TTFT: from the call (``backend.open`` / the client's
``create``) to the first reply text. Decode tok/s: (generated tokens - 1) / (time from the first
to the last reply text); the server's token count is its ``usage``.

    python benchmarks/serve_bench.py --model smollm3-3b-shape --device cuda   # GPU figures
    python benchmarks/serve_bench.py --model tiny            # CPU: checks that it runs
    python benchmarks/serve_bench.py --model ~/.cache/smolchat-tests/SmolLM2-135M-Instruct.Q4_1.gguf

``smollm3-3b-shape``: a SmolLM3-3B-shaped checkpoint with random bf16 weights (bench.py's
builder) and a small tokenizer with the real SmolLM3 chat template (tests/tiny.py); random
weights rarely emit the end token, so runs reach ``--new-tokens``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def model_folder(name: str, work: Path) -> str:
    if name == "tiny":
        from tests.tiny import build_smollm3

        folder = work / "tiny"
        if not (folder / "config.json").exists():
            build_smollm3(folder)
        return str(folder)
    if name == "smollm3-3b-shape":
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from bench import SMOLLM3_3B, build_checkpoint

        from tests.tiny import build_tokenizer

        folder = work / "smollm3-3b-shape"
        build_checkpoint(folder, SMOLLM3_3B)
        if not (folder / "tokenizer.json").exists():
            build_tokenizer(folder)
            fill_vocabulary(folder / "tokenizer.json", SMOLLM3_3B["vocab_size"])
        return str(folder)
    return name


def fill_vocabulary(path: Path, size: int) -> None:
    """Give every id of the 3B shape's vocabulary a text (placeholder words ``" w{i}"``): the
    small test tokenizer has a few hundred, and random weights pick ids across all of them, so
    a reply of ids with no text would have no first token to time."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    missing = size - tok.get_vocab_size()
    tok.add_tokens([f" w{i}" for i in range(missing)])
    tok.save(str(path))


def prompt_text(words: int) -> str:
    base = "The capital of France is Paris. Paris is a city in Europe. "
    return (base * (words // 12 + 1))[: words * 6]


def in_process(backend: Any, text: str, new: int) -> tuple[float, float, int]:
    from smolchat.backend.types import (
        ChatMessage,
        Conversation,
        Finished,
        GenerationRequest,
        SamplingParams,
    )

    backend.engine.reset_cache()
    request = GenerationRequest(
        Conversation((ChatMessage("user", text),), thinking=False),
        sampling=SamplingParams(temperature=0.0),
        max_new_tokens=new,
    )
    t0 = time.perf_counter()
    first = last = 0.0
    tokens = 0
    with backend.open(request) as stream:
        for event in stream:
            if isinstance(event, Finished):
                tokens = event.stats.generated_tokens
                break
            if event.text:
                last = time.perf_counter()
                first = first or last
    return first - t0, _rate(tokens, first, last), tokens


def through_server(client: Any, model: str, backend: Any, text: str, new: int):
    backend.engine.reset_cache()
    t0 = time.perf_counter()
    first = last = 0.0
    tokens = 0
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": text}],
        temperature=0,
        max_tokens=new,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"chat_template_kwargs": {"enable_thinking": False}},
    )
    for chunk in stream:
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
        for choice in chunk.choices:
            delta = choice.delta
            text_out = delta.content or (delta.model_extra or {}).get("reasoning_content")
            if text_out:
                last = time.perf_counter()
                first = first or last
    return first - t0, _rate(tokens, first, last), tokens


def _rate(tokens: int, first: float, last: float) -> float:
    return (tokens - 1) / (last - first) if tokens > 1 and last > first else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", help="tiny, smollm3-3b-shape, or a model")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--quantize", default=None)
    parser.add_argument("--prompt-words", type=int, default=400, help="user message length")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "serve-bench")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args()

    import openai

    import smolchat
    from smolchat.backend.local import LocalBackend
    from smolchat.serve.app import ServeOptions
    from smolchat.serve.server import start_in_thread

    args.work.mkdir(parents=True, exist_ok=True)
    source = model_folder(args.model, args.work)
    engine = smolchat.load(source, device=args.device, dtype=args.dtype, quantize=args.quantize)
    backend = LocalBackend(engine)
    server = start_in_thread(backend, ServeOptions(model_id="bench"))
    client = openai.OpenAI(base_url=server.url, api_key="none", max_retries=0, timeout=600)
    text = prompt_text(args.prompt_words)
    try:
        in_process(backend, text, 8)  # warm-up: kernels, allocator, the server's first request
        through_server(client, "bench", backend, text, 8)
        runs: dict[str, list[tuple[float, float, int]]] = {"in-process": [], "server": []}
        for _ in range(args.runs):  # interleaved
            runs["in-process"].append(in_process(backend, text, args.new_tokens))
            runs["server"].append(through_server(client, "bench", backend, text, args.new_tokens))
    finally:
        server.stop()
    prompt_tokens = engine.last_stats.prompt_tokens if engine.last_stats else 0
    best = {
        path: {
            "ttft_ms": round(min(r[0] for r in rs) * 1000, 1),
            "decode_tok_s": round(max(r[1] for r in rs), 1),
            "tokens": max(r[2] for r in rs),
        }
        for path, rs in runs.items()
    }
    device = f"{engine.device} {engine.quantize or str(engine.dtype).removeprefix('torch.')}"
    if str(engine.device).startswith("cuda"):
        import torch

        device += f" ({torch.cuda.get_device_name(engine.device)})"
    print(
        f"\n{args.model} on {device}: {prompt_tokens}-token prompt, {args.new_tokens} new tokens, "
        f"greedy, best of {args.runs} (interleaved)\n"
    )
    print("| path | TTFT (ms) | decode (tok/s) | tokens |")
    print("|---|---|---|---|")
    for path, b in best.items():
        print(f"| {path} | {b['ttft_ms']} | {b['decode_tok_s']} | {b['tokens']} |")
    a, s = best["in-process"], best["server"]
    if a["decode_tok_s"] and s["decode_tok_s"]:
        print(
            f"| server / in-process | {s['ttft_ms'] / a['ttft_ms']:.2f}x | "
            f"{s['decode_tok_s'] / a['decode_tok_s']:.2f}x | |"
        )
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "model": args.model,
                    "device": device,
                    "prompt_tokens": prompt_tokens,
                    "new_tokens": args.new_tokens,
                    "best": best,
                    "runs": runs,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
