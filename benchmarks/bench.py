"""smolchat against transformers, same weights, same device, one process.

GPU (default): builds a SmolLM3-3B-shaped checkpoint with random bf16 weights (safetensors,
sharded), then measures, phase by phase (each phase's figures are written to the JSON as soon
as it ends, so a run cut short keeps what it measured):

- ``env``: card, torch / transformers / bitsandbytes versions, date; device copy bandwidth
  (a large device-to-device copy, bytes read + written) and the bf16 weight-read limit.
- ``ours``: smolchat bf16: load, compile + capture (first use), prefill tok/s at 512/2048/8192,
  decode tok/s (256 new tokens after a 512 prompt; greedy and sampled), raw graph-replay rate,
  stall of each cache-bucket capture, follow-up time to first token after 1k/8k/32k tokens of
  history, decode after an 8k prompt, peak GPU memory; eager (no graphs) decode for reference.
- ``nf4``: smolchat NF4: peak memory while loading, weight memory, decode tok/s, prefill,
  top-1 agreement and mean KL of next-token distributions vs bf16 over a 512-token prompt.
- ``startup``: whole ``smolchat CKPT -p ... --max-new-tokens 64`` processes, twice each in
  bf16 and NF4, the first with an empty tuning cache.
- ``hf``: transformers eager (dynamic cache): prefill, decode, follow-up TTFT, memory.
- ``hf_nf4``: transformers + bitsandbytes NF4 (double quant, bf16 compute): decode, memory.
- ``hf_static``: transformers, ``cache_implementation="static"`` (auto torch.compile): decode.
- ``llamacpp``: llama.cpp's ``llama-bench`` (``--llama-bench PATH``; its folder is the library
  path) on GGUF files with the same shapes (``--llama-gguf A.gguf,B.gguf``; each file's name up
  to the first dot names its row, e.g. ``F16``, ``Q4_K_M``): ``-ngl 99 -fa 1``, prefill of the
  same 512-token prompt, decode of the same 256 new tokens after 512 and after 8k tokens of context
  (``-d``), llama-bench's mean of 3 repetitions. The recipe for the binaries and
  the files: ``../shared/bench/LLAMACPP.md``.

CPU (``--cpu``): the real SmolLM2-135M-Instruct GGUF dequantized (``exact=True``), smolchat vs
transformers, float32 and bf16 decode tok/s (and prefill). The quantized CPU path (int4/int8)
against llama.cpp and transformers: ``benchmarks/cpu_gguf.py``.

Usage::

    python benchmarks/bench.py --out bench.json                  # GPU, every phase
    python benchmarks/bench.py --phases env,ours,nf4 --out b.json
    python benchmarks/bench.py --cpu --out bench-cpu.json
    python benchmarks/bench.py --phases env,ours,nf4,llamacpp \\
        --llama-bench /tmp/llama/bin/llama-bench --llama-gguf /tmp/g/F16.gguf,/tmp/g/Q4_K_M.gguf
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smolchat.engine.engine import Engine  # noqa: E402
from smolchat.engine.types import SamplingParams  # noqa: E402
from smolchat.model.config import ModelConfig  # noqa: E402
from smolchat.model.weights import (  # noqa: E402
    build_on_meta,
    iter_safetensors,
    load_weights,
    safetensors_files,
)

# SmolLM3-3B's config.json (the shape; weights are random)
SMOLLM3_3B = {
    "architectures": ["SmolLM3ForCausalLM"],
    "model_type": "smollm3",
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": None,
    "eos_token_id": 128012,
    "pad_token_id": 128004,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "initializer_range": 0.02,
    "intermediate_size": 11008,
    "max_position_embeddings": 65536,
    "max_window_layers": 28,
    "mlp_bias": False,
    "no_rope_layer_interval": 4,
    "no_rope_layers": [int((i + 1) % 4 != 0) for i in range(36)],
    "num_attention_heads": 16,
    "num_hidden_layers": 36,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 5000000.0,
    "sliding_window": None,
    "use_sliding_window": False,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "vocab_size": 128256,
}

PROMPT = 512
NEW = 256
PREFILL_LENGTHS = (512, 2048, 8192)
HISTORIES = (1024, 8192, 32768)
FOLLOW_UP = 32  # new tokens in a follow-up turn


class StandInTokenizer:
    """Engine only needs a streaming decoder; random weights make text meaningless anyway."""

    class _Decoder:
        def add(self, token_id: int) -> str:
            return ""

        def flush(self) -> str:
            return ""

    def stream_decoder(self) -> _Decoder:
        return self._Decoder()


class Results:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {}

    def put(self, phase: str, values: dict[str, Any]) -> None:
        self.data.setdefault(phase, {}).update(values)
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=2, default=str))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def mem() -> int:
    return torch.cuda.memory_allocated() if DEVICE.type == "cuda" else 0


def peak() -> int:
    return torch.cuda.max_memory_allocated() if DEVICE.type == "cuda" else 0


def reset_peak() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def gib(n: float) -> float:
    return round(n / 2**30, 3)


def rand_ids(n: int, vocab: int, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n,), generator=g).tolist()


# --- the checkpoint ------------------------------------------------------------------------


def build_checkpoint(folder: Path, cfg: dict[str, Any], seed: int = 0) -> Path:
    """Random bf16 weights (std 0.02, norms ~1) in sharded safetensors, made on the GPU."""
    from safetensors.torch import save_file

    if (folder / "model.safetensors.index.json").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator(device=dev).manual_seed(seed)
    h, inter, hd = cfg["hidden_size"], cfg["intermediate_size"], h_dim(cfg)
    nq, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]

    def mat(rows: int, cols: int) -> torch.Tensor:
        return (torch.randn(rows, cols, generator=g, device=dev) * 0.02).to(torch.bfloat16)

    def norm() -> torch.Tensor:
        return (1.0 + 0.05 * torch.randn(h, generator=g, device=dev)).to(torch.bfloat16)

    weight_map: dict[str, str] = {}
    shard: dict[str, torch.Tensor] = {"model.embed_tokens.weight": mat(cfg["vocab_size"], h)}
    shard["model.norm.weight"] = norm()
    n_layers = cfg["num_hidden_layers"]
    per_shard = 12
    index = 0
    for i in range(n_layers):
        p = f"model.layers.{i}."
        shard[p + "input_layernorm.weight"] = norm()
        shard[p + "post_attention_layernorm.weight"] = norm()
        shard[p + "self_attn.q_proj.weight"] = mat(nq * hd, h)
        shard[p + "self_attn.k_proj.weight"] = mat(nkv * hd, h)
        shard[p + "self_attn.v_proj.weight"] = mat(nkv * hd, h)
        shard[p + "self_attn.o_proj.weight"] = mat(h, nq * hd)
        shard[p + "mlp.gate_proj.weight"] = mat(inter, h)
        shard[p + "mlp.up_proj.weight"] = mat(inter, h)
        shard[p + "mlp.down_proj.weight"] = mat(h, inter)
        if (i + 1) % per_shard == 0 or i == n_layers - 1:
            index += 1
            name = f"model-{index:05d}.safetensors"
            cpu = {k: v.cpu().contiguous() for k, v in shard.items()}
            save_file(cpu, str(folder / name), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(cpu, name))
            shard = {}
    total = (n_layers + per_shard - 1) // per_shard
    for i in range(1, total + 1):  # rename to the usual -of-N names
        old = folder / f"model-{i:05d}.safetensors"
        old.rename(folder / f"model-{i:05d}-of-{total:05d}.safetensors")
    weight_map = {
        k: v.replace(".safetensors", f"-of-{total:05d}.safetensors") for k, v in weight_map.items()
    }
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1)
    )
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": 128012}))
    return folder


def h_dim(cfg: dict[str, Any]) -> int:
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


# --- ours ------------------------------------------------------------------------------------


def load_ours(
    folder: Path, device: torch.device, dtype: torch.dtype, quantize: str | None, fast: bool
) -> Engine:
    cfg = ModelConfig.from_file(folder / "config.json")
    net = build_on_meta(cfg)
    hook = None
    if quantize == "nf4":
        from smolchat.model.quant import nf4_linear_hook

        hook = nf4_linear_hook(device, dtype)
    files = safetensors_files(folder)
    load_weights(net, iter_safetensors(files), device, dtype, linear_hook=hook)
    return Engine(net, StandInTokenizer(), quantize=quantize, fast=fast)


def generate(engine: Engine, ids: list[int], new: int, sampling: SamplingParams | None = None):
    sampling = sampling or SamplingParams(temperature=0.0)
    for _ in engine.generate(ids, sampling=sampling, max_new_tokens=new, stop_ids=[]):
        pass
    stats = engine.last_stats
    assert stats is not None and stats.generated_tokens == new, (stats, new)
    return stats


def ours_prefill(engine: Engine, vocab: int) -> dict[str, float]:
    out = {}
    for n in PREFILL_LENGTHS:
        times = []
        for rep in range(3):
            engine.reset_cache()
            s = generate(engine, rand_ids(n, vocab, 100 + rep), 1)
            times.append(s.ttft_s)
        out[f"prefill_{n}_tok_s"] = round(n / min(times), 1)
    return out


def ours_decode(engine: Engine, vocab: int, prompt: int = PROMPT, new: int = NEW) -> float:
    rates = []
    for rep in range(2):
        engine.reset_cache()
        rates.append(generate(engine, rand_ids(prompt, vocab, 7 + rep), new).decode_tok_s)
    return round(max(rates), 1)


def ours_ttft(engine: Engine, vocab: int) -> dict[str, float]:
    out = {}
    for hist in HISTORIES:
        engine.reset_cache()
        history = rand_ids(hist, vocab, 11)
        generate(engine, history, 1)  # fills the cache with the history
        times = []
        for rep in range(3):
            ids = history + rand_ids(FOLLOW_UP, vocab, 200 + rep)
            s = generate(engine, ids, 1)
            assert s.cached_tokens == hist, (s.cached_tokens, hist)
            times.append(s.ttft_s)
        out[f"followup_ttft_ms_after_{hist}"] = round(1000 * statistics.median(times), 2)
    return out


@torch.inference_mode()
def replay_rate(engine: Engine, steps: int = 256) -> float | None:
    """Raw graph replays back to back (GPU-bound; no host work between steps)."""
    fast = engine.fast
    if fast is None or not fast.graphs or fast.graph is None:
        return None
    engine.reset_cache()
    generate(engine, rand_ids(PROMPT, engine.config.vocab_size, 5), 2)
    engine.cache.ensure_capacity(PROMPT + steps + 1)
    fast.start(PROMPT)
    fast.prepare()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        fast.graph.replay()
    sync()
    return round(steps / (time.perf_counter() - t0), 1)


def tuning_table(engine: Engine) -> dict[str, Any]:
    """Per matvec: chosen kernel config, microseconds per call, achieved GB/s."""
    fast = engine.fast
    w = fast.weights.layers[0]  # linear_spec tuples: (kind, weight or packed codes, ...)
    mats = {"qkv": w.qkv[1], "o": w.o[1], "gate_up": w.gate_up[1], "down": w.down[1]}
    mats["head"] = fast.weights.head.weight[1]
    out = {}
    for name, (cfg, secs) in fast.tuning.items():
        nbytes = mats[name].numel() * mats[name].element_size()
        out[name] = {
            "config": cfg,
            "us": round(secs * 1e6, 2),
            "gb_s": round(nbytes / secs / 1e9, 1) if secs > 0 else None,
        }
    return out


def stages(engine: Engine) -> dict[str, Any]:
    """The fast decoder's start-up stages (seconds) and whether the tuner's cache answered."""
    fast = engine.fast
    out: dict[str, Any] = {k: round(v, 2) for k, v in fast.timings.items()}
    out["tuning_from_cache"] = fast.tuning_cached
    return out


def profile_step(engine: Engine, path: Path) -> None:
    """CUDA kernel times of the (compiled, not captured) step: where a token's time goes."""
    from torch.profiler import ProfilerActivity, profile

    fast = engine.fast
    if fast is None:
        return
    engine.reset_cache()
    generate(engine, rand_ids(PROMPT, engine.config.vocab_size, 5), 2)
    fast.start(PROMPT)
    with torch.inference_mode():
        for _ in range(3):
            fast._body()
        sync()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                fast._body()
            sync()
    text = prof.key_averages().table(
        sort_by="cuda_time_total", row_limit=40, max_name_column_width=90
    )
    path.write_text(text)
    print(text[:6000])


def profile_eager(engine: Engine, path: Path) -> None:
    """Host and device time of one eager decode step (where plain PyTorch decoding goes)."""
    from torch.profiler import ProfilerActivity, profile

    engine.reset_cache()
    generate(engine, rand_ids(PROMPT, engine.config.vocab_size, 5), 2)
    with torch.inference_mode():
        engine._step(1)
        sync()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            engine._step(2)
            sync()
    averages = prof.key_averages()
    text = averages.table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=60)
    path.write_text(text)
    print(text[:4000])


def phase_ours_inductor(res: Results, folder: Path, args) -> None:
    """The same weights with the Inductor-compiled step (Triton attention) instead."""
    from smolchat.engine.fast import FastDecoder

    free()
    engine = load_ours(folder, DEVICE, torch.bfloat16, None, fast=False)
    engine.fast = FastDecoder(engine.model, engine.cache, kernels="inductor")
    t0 = time.perf_counter()
    engine.warmup()
    res.put("ours_inductor", {"first_compile_capture_s": round(time.perf_counter() - t0, 1)})
    res.put("ours_inductor", {"mode": engine.fast.mode if engine.fast else "eager"})
    vocab = engine.config.vocab_size
    res.put("ours_inductor", {"decode_tok_s": ours_decode(engine, vocab)})
    res.put("ours_inductor", {"graph_replay_tok_s": replay_rate(engine)})
    log(f"ours (inductor): {res.data['ours_inductor']}")
    del engine
    free()


def next_token_logits(model_forward: Callable[[torch.Tensor], torch.Tensor], ids: list[int]):
    x = torch.tensor([ids], device=DEVICE)
    with torch.inference_mode():
        return model_forward(x).float().cpu()  # (T, V)


def phase_ours(res: Results, folder: Path, args) -> None:
    dev = DEVICE
    free()
    reset_peak()
    t0 = time.perf_counter()
    engine = load_ours(folder, dev, torch.bfloat16, None, fast=True)
    sync()
    load_s = time.perf_counter() - t0
    weights = mem()
    res.put("ours", {"load_s": round(load_s, 2), "weights_gib": gib(weights)})
    vocab = engine.config.vocab_size
    log(f"ours: loaded in {load_s:.1f}s; compiling + capturing")
    warm = engine.warmup()
    mode = engine.fast.mode if engine.fast else "eager"
    res.put("ours", {"first_compile_capture_s": round(warm, 1), "mode": mode})
    log(f"ours: warmup {warm:.1f}s, mode {engine.fast.mode if engine.fast else 'eager'}")
    if engine.fast is not None and engine.fast.tuning:
        res.put("ours", {"matvec_tuning": tuning_table(engine)})
        res.put("ours", {"startup_stages_s": stages(engine)})
        log(f"ours: matvecs {res.data['ours']['matvec_tuning']}")
    reset_peak()
    if engine.fast is not None:
        engine.fast.captures.clear()
    res.put("ours", {"decode_tok_s": ours_decode(engine, vocab)})
    log(f"ours: decode {res.data['ours']['decode_tok_s']} tok/s")
    res.put("ours", {"decode_peak_gib": gib(peak())})
    caps = list(engine.fast.captures) if engine.fast else []
    res.put("ours", {"captures_during_decode": [(c, round(s * 1000, 1)) for c, s in caps]})
    sampled = SamplingParams(temperature=0.7, top_p=0.9, seed=1)
    engine.reset_cache()
    s = generate(engine, rand_ids(PROMPT, vocab, 9), NEW, sampled)
    res.put("ours", {"decode_sampled_tok_s": round(s.decode_tok_s, 1)})
    res.put("ours", {"graph_replay_tok_s": replay_rate(engine)})
    if args.profile:
        profile_step(engine, args.out.with_name("profile.txt"))
    log(f"ours: sampled {s.decode_tok_s:.1f}, replay {res.data['ours']['graph_replay_tok_s']}")
    res.put("ours", ours_prefill(engine, vocab))
    from smolchat.model import network

    res.put("ours", {"prefill_flash_lower_right": network._FLASH_OK[0]})
    log(f"ours: prefill {res.data['ours']}")
    reset_peak()
    res.put("ours", ours_ttft(engine, vocab))
    res.put("ours", {"ttft_phase_peak_gib": gib(peak())})
    res.put("ours", {"cache_gib_at_32k": gib(engine.cache.nbytes)})
    engine.reset_cache()
    res.put("ours", {"decode_after_8k_tok_s": ours_decode(engine, vocab, prompt=8192, new=128)})
    caps = list(engine.fast.captures) if engine.fast else []
    res.put("ours", {"all_captures_ms": [(c, round(s * 1000, 1)) for c, s in caps]})
    log(f"ours: {res.data['ours']}")
    # bf16 reference logits for the NF4 comparison
    ids = rand_ids(PROMPT, vocab, 42)
    net = engine.model
    ref = next_token_logits(lambda x: net(x)[0], ids)
    torch.save(ref, args.work / "bf16_logits.pt")
    # the same weights without CUDA graphs (plain eager decode), for reference
    engine.fast = None
    engine.reset_cache()
    s = generate(engine, rand_ids(PROMPT, vocab, 8), 32)
    res.put("ours", {"eager_decode_tok_s": round(s.decode_tok_s, 1)})
    if args.profile:
        profile_eager(engine, args.out.with_name("profile_eager.txt"))
    del engine, ref
    free()
    if args.no_compile_variant:
        engine = load_ours(folder, dev, torch.bfloat16, None, fast=False)
        from smolchat.engine.fast import FastDecoder

        engine.fast = FastDecoder(engine.model, engine.cache, compile=False)
        t0 = time.perf_counter()
        engine.warmup()
        res.put("ours", {"no_compile_capture_s": round(time.perf_counter() - t0, 2)})
        res.put("ours", {"no_compile_decode_tok_s": ours_decode(engine, vocab)})
        log(f"ours (graphs, no compile): {res.data['ours']['no_compile_decode_tok_s']}")
        del engine
        free()


def phase_nf4(res: Results, folder: Path, args) -> None:
    dev = DEVICE
    free()
    base = mem()
    reset_peak()
    t0 = time.perf_counter()
    engine = load_ours(folder, dev, torch.bfloat16, "nf4", fast=True)
    sync()
    out: dict[str, Any] = {
        "load_s": round(time.perf_counter() - t0, 2),
        "load_peak_gib": gib(peak() - base),
        "weights_gib": gib(mem() - base),
    }
    res.put("nf4", out)
    vocab = engine.config.vocab_size
    warm = engine.warmup()
    res.put("nf4", {"first_compile_capture_s": round(warm, 1)})
    res.put("nf4", {"mode": engine.fast.mode if engine.fast else "eager"})
    if engine.fast is not None and engine.fast.tuning:
        res.put("nf4", {"matvec_tuning": tuning_table(engine)})
        res.put("nf4", {"startup_stages_s": stages(engine)})
        log(f"nf4: matvecs {res.data['nf4']['matvec_tuning']}")
    reset_peak()
    res.put("nf4", {"decode_tok_s": ours_decode(engine, vocab)})
    res.put("nf4", {"decode_peak_gib": gib(peak() - base)})
    res.put("nf4", {"graph_replay_tok_s": replay_rate(engine)})
    log(f"nf4: {res.data['nf4']}")
    engine.reset_cache()
    s = generate(engine, rand_ids(2048, vocab, 3), 1)
    res.put("nf4", {"prefill_2048_tok_s": round(2048 / s.ttft_s, 1)})
    ref_path = args.work / "bf16_logits.pt"
    if ref_path.exists():
        ref = torch.load(ref_path, weights_only=True)
        net = engine.model
        got = next_token_logits(lambda x: net(x)[0], rand_ids(PROMPT, vocab, 42))
        lp, lq = torch.log_softmax(ref, -1), torch.log_softmax(got, -1)
        kl = (lp.exp() * (lp - lq)).sum(-1).mean().item()
        top1 = (ref.argmax(-1) == got.argmax(-1)).float().mean().item()
        res.put("nf4", {"top1_agreement_vs_bf16": round(top1, 4), "mean_kl_vs_bf16": kl})
    engine.fast = None
    engine.reset_cache()
    s = generate(engine, rand_ids(PROMPT, vocab, 8), 16)
    res.put("nf4", {"eager_decode_tok_s": round(s.decode_tok_s, 1)})
    log(f"nf4: {res.data['nf4']}")
    del engine
    free()


def phase_startup(res: Results, folder: Path, args) -> None:
    """Whole ``smolchat CKPT -p ... --max-new-tokens 64`` processes, twice per mode, with an
    empty tuning cache before the first (the Triton cache stays, as after an install)."""
    import subprocess

    from tests.tiny import build_tokenizer

    if not (folder / "tokenizer.json").exists():
        build_tokenizer(folder)
    cache = args.work / "startup-cache"
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "SMOLCHAT_CACHE_DIR": str(cache), "PYTHONPATH": path}
    probe = ROOT / "benchmarks" / "startup_probe.py"
    for mode, extra in (("bf16", []), ("nf4", ["--quantize", "nf4"])):
        if (cache / "matvec-tuning.json").exists():
            (cache / "matvec-tuning.json").unlink()
        runs, stages = [], []
        for _ in range(2):
            cmd = [sys.executable, "-m", "smolchat", str(folder), "-p", "Hello there"]
            cmd += ["--max-new-tokens", "64", *extra]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
            runs.append(round(time.perf_counter() - t0, 2))
            if proc.returncode not in (0, 3):  # 3: the answer was cut at --max-new-tokens
                res.put("startup", {f"{mode}_error": proc.stderr[-400:]})
                break
        for _ in range(2):  # the same launch, stage by stage (tuning cache warm by now)
            cmd = [sys.executable, str(probe), str(folder), *extra]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
            if proc.returncode == 0:
                stages.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            else:
                stages.append({"error": proc.stderr[-300:]})
        res.put("startup", {f"{mode}_process_s": runs, f"{mode}_stages": stages})
        log(f"startup {mode}: {runs} {stages}")


# --- transformers ----------------------------------------------------------------------------


def hf_decode(model, ids: list[int], new: int, **kwargs) -> float:
    return round(hf_decode_rate(model, ids, new, DEVICE, **kwargs), 1)


def hf_decode_rate(model, ids: list[int], new: int, device: torch.device, **kwargs) -> float:
    """transformers' greedy decode tok/s: a streamer stamps the first and the last token."""
    from transformers.generation.streamers import BaseStreamer

    class Clock(BaseStreamer):
        def __init__(self) -> None:
            self.n, self.first, self.last = 0, 0.0, 0.0

        def put(self, value) -> None:
            self.n += 1
            if self.n == 2:
                self.first = time.perf_counter()

        def end(self) -> None:
            self.last = time.perf_counter()

    clock = Clock()
    x = torch.tensor([ids], device=device)
    with torch.inference_mode():
        out = model.generate(
            x,
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=False,
            streamer=clock,
            pad_token_id=0,
            **kwargs,
        )
    assert out.shape[1] == len(ids) + new
    return (new - 1) / (clock.last - clock.first)


def hf_load(folder: Path, **kwargs):
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.bfloat16, device_map=DEVICE.type, **kwargs
    )
    return model.eval()


def phase_hf(res: Results, folder: Path, args) -> None:
    from transformers import DynamicCache

    free()
    base = mem()
    t0 = time.perf_counter()
    model = hf_load(folder)
    res.put("hf", {"load_s": round(time.perf_counter() - t0, 2)})
    res.put("hf", {"weights_gib": gib(mem() - base)})
    vocab = model.config.vocab_size
    reset_peak()
    hf_decode(model, rand_ids(PROMPT, vocab, 6), 8)
    res.put("hf", {"decode_tok_s": hf_decode(model, rand_ids(PROMPT, vocab, 7), NEW)})
    res.put("hf", {"decode_peak_gib": gib(peak() - base)})
    log(f"hf eager: {res.data['hf']}")
    out = {}
    for n in PREFILL_LENGTHS:
        times = []
        for rep in range(3):
            x = torch.tensor([rand_ids(n, vocab, 100 + rep)], device=DEVICE)
            sync()
            t0 = time.perf_counter()
            with torch.inference_mode():
                logits = model(x, use_cache=True, logits_to_keep=1).logits
                int(logits[0, -1].argmax())
            times.append(time.perf_counter() - t0)
            del logits
        out[f"prefill_{n}_tok_s"] = round(n / min(times), 1)
    res.put("hf", out)
    log(f"hf eager: {out}")
    reset_peak()
    out = {}
    for hist in HISTORIES:
        cache = DynamicCache(config=model.config)
        history = torch.tensor([rand_ids(hist, vocab, 11)], device=DEVICE)
        with torch.inference_mode():
            for start in range(0, hist, 8192):
                model(
                    history[:, start : start + 8192],
                    past_key_values=cache,
                    use_cache=True,
                    logits_to_keep=1,
                )
        times = []
        for rep in range(3):
            new = torch.tensor([rand_ids(FOLLOW_UP, vocab, 200 + rep)], device=DEVICE)
            sync()
            t0 = time.perf_counter()
            with torch.inference_mode():
                logits = model(new, past_key_values=cache, use_cache=True, logits_to_keep=1).logits
                int(logits[0, -1].argmax())
            times.append(time.perf_counter() - t0)
            cache.crop(-FOLLOW_UP)  # back to the history (negative: drop the last n)
            assert cache.get_seq_length() == hist, cache.get_seq_length()
        out[f"followup_ttft_ms_after_{hist}"] = round(1000 * statistics.median(times), 2)
        del cache
        free()
    res.put("hf", out)
    res.put("hf", {"ttft_phase_peak_gib": gib(peak() - base)})
    log(f"hf eager: {out}")
    del model
    free()


def phase_hf_nf4(res: Results, folder: Path, args) -> None:
    import transformers

    free()
    base = mem()
    reset_peak()
    qc = transformers.BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    t0 = time.perf_counter()
    model = hf_load(folder, quantization_config=qc)
    res.put(
        "hf_nf4",
        {
            "load_s": round(time.perf_counter() - t0, 2),
            "load_peak_gib": gib(peak() - base),
            "weights_gib": gib(mem() - base),
        },
    )
    vocab = model.config.vocab_size
    hf_decode(model, rand_ids(PROMPT, vocab, 6), 4)
    rate = hf_decode(model, rand_ids(PROMPT, vocab, 7), args.hf_nf4_new)
    res.put("hf_nf4", {"decode_tok_s": rate})
    log(f"hf nf4: {res.data['hf_nf4']}")
    del model
    free()


def phase_hf_static(res: Results, folder: Path, args) -> None:
    free()
    model = hf_load(folder)
    vocab = model.config.vocab_size
    t0 = time.perf_counter()
    hf_decode(model, rand_ids(PROMPT, vocab, 6), NEW, cache_implementation="static")
    res.put("hf_static", {"first_call_s": round(time.perf_counter() - t0, 1)})
    log(f"hf static: first call (compile) {res.data['hf_static']['first_call_s']}s")
    rate = hf_decode(model, rand_ids(PROMPT, vocab, 7), NEW, cache_implementation="static")
    res.put("hf_static", {"decode_tok_s": rate})
    log(f"hf static: {rate} tok/s")
    del model
    free()


def phase_env(res: Results, args, cfg: dict[str, Any]) -> None:
    import transformers

    info: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }
    try:
        import bitsandbytes

        info["bitsandbytes"] = bitsandbytes.__version__
    except ImportError:
        info["bitsandbytes"] = None
    if torch.cuda.is_available():
        info["card"] = torch.cuda.get_device_name()
        n = 1 << 30  # 1 GiB each way
        src = torch.empty(n, dtype=torch.uint8, device=DEVICE).random_(0, 255)
        dst = torch.empty_like(src)
        for _ in range(3):
            dst.copy_(src)
        sync()
        times = []
        for _ in range(10):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            dst.copy_(src)
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1000)
        bw = 2 * n / statistics.median(times)
        del src, dst
        free()
        h, inter, hd = cfg["hidden_size"], cfg["intermediate_size"], h_dim(cfg)
        per_layer = h * (cfg["num_attention_heads"] + 2 * cfg["num_key_value_heads"]) * hd
        per_layer += cfg["num_attention_heads"] * hd * h + 3 * h * inter + 2 * h
        params = cfg["num_hidden_layers"] * per_layer + cfg["vocab_size"] * h + h
        info.update(
            {
                "copy_bandwidth_tb_s": round(bw / 1e12, 3),
                "bf16_weight_bytes_gb": round(2 * params / 1e9, 3),
                "bf16_weight_read_limit_tok_s": round(bw / (2 * params), 1),
            }
        )
    res.put("env", info)
    log(f"env: {info}")


# --- CPU mode --------------------------------------------------------------------------------


def run_cpu(res: Results, args) -> None:
    import smolchat

    gguf = Path(args.gguf).expanduser()
    if not gguf.exists():
        raise SystemExit(f"GGUF not found at {gguf}; run the tests once to fetch it")
    import transformers

    res.put(
        "env",
        {
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "model": gguf.name,
            "bitsandbytes": _bnb_version(),
        },
    )
    text = "The history of the city of Paris, capital of France, begins " * 8
    new = args.cpu_new
    for dtype in (torch.float32, torch.bfloat16):
        name = str(dtype).removeprefix("torch.")
        engine = smolchat.load(str(gguf), device="cpu", dtype=dtype, exact=True)  # dequantized
        model = transformers.AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=dtype
        ).eval()
        ids = engine.tokenizer.encode(text)[:128]
        generate(engine, ids[:16], 4)
        cpu_hf_decode(model, ids[:16], 4)
        ours, theirs = [], []
        for _ in range(3):  # interleaved: this machine's other load hits both alike
            engine.reset_cache()
            ours.append(generate(engine, ids, new).decode_tok_s)
            theirs.append(cpu_hf_decode(model, ids, new))
        engine.reset_cache()
        pre = generate(engine, ids, 1)
        res.put(f"ours_{name}", {"decode_tok_s": round(max(ours), 1)})
        res.put(f"ours_{name}", {"prefill_tok_s": round(len(ids) / pre.ttft_s, 1)})
        res.put(f"hf_{name}", {"decode_tok_s": round(max(theirs), 1)})
        log(f"{name}: ours {ours} hf {theirs}")
        del engine, model
        gc.collect()
    if not args.no_nf4:
        cpu_nf4(res, gguf, text, new)


def _bnb_version() -> str | None:
    try:
        import bitsandbytes
    except ImportError:
        return None
    return bitsandbytes.__version__


def cpu_nf4(res: Results, gguf: Path, text: str, new: int) -> None:
    """NF4 on the real model: agreement with bf16 over 512 tokens, the France answer, speed."""
    import smolchat

    bf16 = smolchat.load(str(gguf), device="cpu", dtype=torch.bfloat16, exact=True)
    ids = (bf16.tokenizer.encode(text * 8))[:PROMPT]
    ref = bf16.logits(ids)
    size = sum(p.numel() * p.element_size() for p in bf16.model.parameters())
    del bf16
    gc.collect()
    engine = smolchat.load(str(gguf), device="cpu", quantize="nf4")
    got = engine.logits(ids)
    lp, lq = torch.log_softmax(ref, -1), torch.log_softmax(got, -1)
    top1 = (ref.argmax(-1) == got.argmax(-1)).float().mean().item()
    out: dict[str, Any] = {
        "prompt_tokens": len(ids),
        "top1_agreement_vs_bf16": round(top1, 4),
        "mean_kl_vs_bf16": round((lp.exp() * (lp - lq)).sum(-1).mean().item(), 5),
        "bf16_params_mib": round(size / 2**20, 1),
        "nf4_params_mib": round(nf4_bytes(engine.model) / 2**20, 1),
    }
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    chat_ids = engine.tokenizer.encode(prompt)
    answer = []
    greedy = SamplingParams(temperature=0.0)
    for ev in engine.generate(chat_ids, sampling=greedy, max_new_tokens=24):
        answer.append(ev.text)
    out["france_answer"] = "".join(answer).strip()
    engine.reset_cache()
    out["decode_tok_s"] = round(generate(engine, ids[:128], new).decode_tok_s, 1)
    res.put("ours_nf4", out)
    log(f"nf4: {out}")


def nf4_bytes(model: torch.nn.Module) -> int:
    """Bytes of every parameter, NF4 weights counted with their block scales."""
    total = 0
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            state = getattr(param, "quant_state", None)
            total += param.numel() * param.element_size()
            if name == "weight" and state is not None:
                total += state.absmax.numel() * state.absmax.element_size()
                if getattr(state, "nested", False):
                    total += state.state2.absmax.numel() * 4
    return total


def cpu_hf_decode(model, ids: list[int], new: int) -> float:
    return hf_decode_rate(model, ids, new, torch.device("cpu"))


# --- report ----------------------------------------------------------------------------------


def llama_bench_rows(exe: Path, gguf: Path, extra: list[str]) -> list[dict[str, Any]]:
    """One ``llama-bench -o json`` run on the GPU: its result rows (n_prompt, n_gen, n_depth,
    avg_ts = mean tokens/s over the repetitions)."""
    env = dict(os.environ, LD_LIBRARY_PATH=str(exe.parent))
    cmd = [str(exe), "-m", str(gguf), "-ngl", "99", "-fa", "1", "-r", "3", "-o", "json", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"llama-bench failed ({proc.returncode}): {proc.stderr[-400:]}")
    return json.loads(proc.stdout)


def phase_llamacpp(res: Results, folder: Path, args) -> None:
    """llama.cpp on GGUF files with the same shapes: prefill of PROMPT tokens, decode of NEW
    tokens after a PROMPT-token context and after an 8k one (llama-bench ``-d``), as ours."""
    if not args.llama_bench or not args.llama_gguf:
        raise RuntimeError("the llamacpp phase needs --llama-bench PATH and --llama-gguf FILES")
    exe = Path(args.llama_bench).expanduser()
    for name in args.llama_gguf.split(","):
        gguf = Path(name).expanduser()
        label = "llamacpp_" + gguf.name.split(".")[0]
        out: dict[str, Any] = {"file_gib": gib(gguf.stat().st_size)}
        for row in llama_bench_rows(exe, gguf, ["-p", str(PROMPT), "-n", "0"]):
            out[f"prefill_{row['n_prompt']}_tok_s"] = round(float(row["avg_ts"]), 1)
        depths = f"{PROMPT},8192"
        for row in llama_bench_rows(exe, gguf, ["-p", "0", "-n", str(NEW), "-d", depths]):
            key = "decode_tok_s" if row["n_depth"] == PROMPT else "decode_after_8k_tok_s"
            out[key] = round(float(row["avg_ts"]), 1)
        res.put(label, out)
        log(f"{label}: {res.data[label]}")


def table(data: dict[str, Any]) -> str:
    env = data.get("env", {})
    head = (
        f"card: {env.get('card', env.get('cpu', '?'))} | torch {env.get('torch')} | "
        f"transformers {env.get('transformers')} | bitsandbytes {env.get('bitsandbytes')} | "
        f"{env.get('date')}"
    )
    rows = [head]
    if "copy_bandwidth_tb_s" in env:
        rows.append(
            f"copy bandwidth {env['copy_bandwidth_tb_s']} TB/s; bf16 weights "
            f"{env['bf16_weight_bytes_gb']} GB -> weight-read limit "
            f"{env['bf16_weight_read_limit_tok_s']} tok/s"
        )
    order = ("ours", "ours_inductor", "hf", "hf_static", "nf4", "hf_nf4")
    systems = [k for k in order if k in data]
    systems += [k for k in data if k.startswith(("ours_", "hf_", "llamacpp_")) and k not in systems]
    keys: list[str] = []
    for s in systems:
        for k, v in data[s].items():
            if k not in keys and isinstance(v, (int, float)) and not isinstance(v, bool):
                keys.append(k)
    width = max([len(k) for k in keys] + [10])
    rows.append(f"{'metric':<{width}} " + " ".join(f"{s:>12}" for s in systems))
    for k in keys:
        cells = []
        for s in systems:
            v = data[s].get(k)
            cells.append(f"{'' if v is None else _fmt(v):>12}")
        rows.append(f"{k:<{width}} " + " ".join(cells))
    return "\n".join(rows)


def _fmt(v: float) -> str:
    if isinstance(v, float) and (abs(v) < 0.01 and v != 0):
        return f"{v:.2e}"
    return f"{v:g}" if isinstance(v, float) else str(v)


def main() -> None:
    global PROMPT, NEW, PREFILL_LENGTHS, HISTORIES
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")) / "bench.json")
    ap.add_argument("--work", type=Path, default=Path("/tmp/smolchat-bench"))
    ap.add_argument("--phases", default="env,ours,nf4,hf,hf_nf4,hf_static")
    ap.add_argument("--cpu", action="store_true", help="SmolLM2-135M GGUF on the CPU")
    ap.add_argument("--gguf", default="~/.cache/smolchat-tests/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--cpu-new", type=int, default=64)
    ap.add_argument("--no-nf4", action="store_true", help="--cpu: skip the NF4 figures")
    ap.add_argument("--hf-nf4-new", type=int, default=NEW)
    ap.add_argument("--no-compile-variant", action="store_true")
    ap.add_argument("--profile", action="store_true", help="kernel times of our decode step")
    ap.add_argument("--llama-bench", default=None, help="llamacpp phase: llama-bench's path")
    ap.add_argument("--llama-gguf", default=None, help="llamacpp phase: GGUF paths, a,b")
    ap.add_argument(
        "--smoke", action="store_true", help="a tiny shape and short lengths (checks the script)"
    )
    args = ap.parse_args()
    res = Results(args.out)
    config = SMOLLM3_3B
    if args.smoke:
        PROMPT, NEW, PREFILL_LENGTHS, HISTORIES = 64, 16, (64, 300), (128, 600)
        args.hf_nf4_new = min(args.hf_nf4_new, NEW)
        config = {
            **SMOLLM3_3B,
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": 1024,
            "eos_token_id": 1000,
            "pad_token_id": 1001,
            "no_rope_layers": [1, 1, 1, 0],
        }
    if args.cpu:
        run_cpu(res, args)
        print(table(res.data))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    phases = args.phases.split(",")
    if "env" in phases:
        phase_env(res, args, config)
    t0 = time.perf_counter()
    name = "smoke-random" if args.smoke else "smollm3-3b-random"
    folder = build_checkpoint(args.work / name, config)
    log(f"checkpoint ready in {time.perf_counter() - t0:.1f}s")
    runners = {
        "ours": phase_ours,
        "ours_inductor": phase_ours_inductor,
        "nf4": phase_nf4,
        "startup": phase_startup,
        "hf": phase_hf,
        "hf_nf4": phase_hf_nf4,
        "hf_static": phase_hf_static,
        "llamacpp": phase_llamacpp,
    }
    for name in phases:
        if name == "env":
            continue
        t0 = time.perf_counter()
        try:
            runners[name](res, folder, args)
        except Exception as exc:
            traceback.print_exc()
            res.put(name, {"error": f"{type(exc).__name__}: {exc}"[:500]})
        res.put(name, {"phase_s": round(time.perf_counter() - t0, 1)})
        log(f"phase {name} done in {time.perf_counter() - t0:.1f}s")
    print(table(res.data))


if __name__ == "__main__":
    main()
