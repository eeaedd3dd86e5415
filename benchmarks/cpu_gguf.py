"""CPU decode on a GGUF: every smolchat CPU mode against llama.cpp and transformers, interleaved.

Each system runs in its own process, loaded one after another (so loading peaks do not
overlap), then all stay resident while the driver asks each in turn for one measurement,
round after round (the machine is shared: interleaving spreads other jobs' load over everyone,
and the best round is kept). llama.cpp is ``llama-bench -p 0 -n NEW -t THREADS -r 1``, one
process per round. Figures per system: decode tok/s (best round, and all rounds), for smolchat
and transformers the CPU ms per generated token (best round: the worker's CPU time, which
other jobs on a shared machine move far less than wall time), resident memory after loading
(whole process, and what loading added), peak resident memory.

Systems (``--systems``, comma-separated):

- ``smolchat``: the default on this CPU: int4/int8 weight-only kernels, bf16 (or float32
  without AVX-512 BF16 / AMX) activations, the lean CPU decode step.
- ``smolchat-int-f32``: the same weights, float32 activations.
- ``smolchat-bf16``: every weight dequantized to bf16 (``exact=True, dtype=bfloat16``).
- ``smolchat-exact``: every weight dequantized to float32, equal to transformers.
- ``smolchat-nf4``: dequantized, re-quantized to NF4 by bitsandbytes.
- ``transformers-f32`` / ``transformers-bf16``: ``AutoModelForCausalLM`` on the same GGUF.
- ``llama.cpp``: needs ``--llama-bin`` (a folder with ``llama-bench`` and its libraries).

Quality (``--quality``): next-token top-1 agreement and mean KL of ``smolchat`` against
``smolchat-exact`` over a 512-token text, and the greedy answer to "What is the capital of
France?".

Usage::

    python benchmarks/cpu_gguf.py --llama-bin /work/llama-bin --quality \\
        --out benchmarks/results/cpu_gguf.json
    python benchmarks/cpu_gguf.py --gguf big.gguf --systems smolchat,llama.cpp --new 32
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_GGUF = Path.home() / ".cache/smolchat-tests/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLCHAT = {
    "smolchat": {},
    "smolchat-int-f32": {"dtype": "float32", "exact": False},
    "smolchat-bf16": {"dtype": "bfloat16", "exact": True},
    "smolchat-exact": {"exact": True},
    "smolchat-nf4": {"quantize": "nf4"},
}
TRANSFORMERS = {"transformers-f32": "float32", "transformers-bf16": "bfloat16"}
DEFAULT_SYSTEMS = "smolchat,smolchat-int-f32,smolchat-bf16,smolchat-exact,transformers-f32,"
DEFAULT_SYSTEMS += "transformers-bf16,llama.cpp"
PROMPT = "The history of the city of Paris, capital of France, begins "


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def say(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


# --- a worker: one system, loaded once, measured on request ------------------------------


def worker(system: str, gguf: Path, new: int, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    if system in TRANSFORMERS:
        import transformers

        from smolchat.model.gguf_tokenizer import build_tokenizer  # noqa: F401 (same imports)

        base = rss_mib()
        t0 = time.perf_counter()
        dtype = getattr(torch, TRANSFORMERS[system])
        model = transformers.AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=dtype
        ).eval()
        tok = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        ids = tok.encode(PROMPT, add_special_tokens=False)

        sys.path.insert(0, str(Path(__file__).parent))
        from bench import hf_decode_rate

        def measure() -> float:
            return hf_decode_rate(model, ids, new, torch.device("cpu"))
    else:
        import smolchat
        from smolchat import SamplingParams

        base = rss_mib()
        t0 = time.perf_counter()
        engine = smolchat.load(str(gguf), device="cpu", **SMOLCHAT[system])  # type: ignore[arg-type]
        ids = engine.tokenizer.encode(PROMPT)
        greedy = SamplingParams(temperature=0.0)

        def measure() -> float:
            engine.reset_cache()
            *_, last = engine.generate(ids, greedy, max_new_tokens=new, stop_ids=[])
            assert last.stats is not None and last.stats.generated_tokens == new
            return last.stats.decode_tok_s

    load_s = time.perf_counter() - t0
    measure()  # warm-up
    loaded = rss_mib()
    say(
        {
            "ready": True,
            "load_s": round(load_s, 2),
            "rss_base_mib": round(base, 1),
            "rss_loaded_mib": round(loaded, 1),
            "peak_mib": round(peak_mib(), 1),
        }
    )
    for line in sys.stdin:
        if line.strip() != "go":
            break
        c0 = time.process_time()
        tok_s = measure()
        cpu_ms = (time.process_time() - c0) / new * 1e3  # prefill of the short prompt included
        say({"tok_s": round(tok_s, 2), "cpu_ms_per_tok": round(cpu_ms, 2)})
    say({"rss_end_mib": round(rss_mib(), 1), "peak_mib": round(peak_mib(), 1)})


class Worker:
    def __init__(self, system: str, args: argparse.Namespace) -> None:
        cmd = [sys.executable, __file__, "--worker", system, "--gguf", str(args.gguf)]
        cmd += ["--new", str(args.new), "--threads", str(args.threads)]
        self.system = system
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info = self._read()
        self.rounds: list[float] = []
        self.cpu_ms: list[float] = []

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.system} worker died (exit {self.proc.wait()})")
            if line.startswith("{"):
                return json.loads(line)

    def measure(self) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        got = self._read()
        self.rounds.append(float(got["tok_s"]))
        self.cpu_ms.append(float(got["cpu_ms_per_tok"]))
        return self.rounds[-1]

    def close(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        end = self._read()
        self.proc.wait()
        best_cpu = min(self.cpu_ms)
        return {
            **self.info,
            **end,
            "rounds_tok_s": self.rounds,
            "tok_s": max(self.rounds),
            "cpu_ms_per_tok": best_cpu,
            "rounds_cpu_ms_per_tok": self.cpu_ms,
        }


def llama_bench(args: argparse.Namespace) -> tuple[float, float]:
    """One llama-bench run: (decode tok/s, peak RSS MiB of the process).

    No CPU time: llama-bench's process CPU time includes loading and a warm-up run, and
    differencing two run lengths proved too noisy on the shared machine (0.65-1.96 s for the
    same 16-token run)."""
    exe = Path(args.llama_bin) / "llama-bench"
    env = dict(os.environ, LD_LIBRARY_PATH=str(args.llama_bin))
    cmd = [str(exe), "-m", str(args.gguf), "-p", "0", "-n", str(args.new)]
    cmd += ["-t", str(args.threads), "-r", "1", "-o", "json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise RuntimeError(f"llama-bench failed (status {status})")
    rows = json.loads(out)
    return float(rows[0]["avg_ts"]), usage.ru_maxrss / 1024


# --- quality ------------------------------------------------------------------------------


def quality(gguf: Path) -> dict[str, Any]:
    import torch

    import smolchat
    from smolchat import SamplingParams

    fast = smolchat.load(str(gguf), device="cpu")
    exact = smolchat.load(str(gguf), device="cpu", exact=True)
    text = (Path(__file__).parent.parent / "README.md").read_text()
    ids = fast.tokenizer.encode(text)[:512]
    a, b = fast.logits(ids), exact.logits(ids)
    lp, lq = torch.log_softmax(b, -1), torch.log_softmax(a, -1)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    chat = fast.tokenizer.encode_chat(messages)
    answer = "".join(e.text for e in fast.generate(chat, SamplingParams(temperature=0.0), 24))
    return {
        "tokens": len(ids),
        "text": "the repository README (first 512 tokens)",
        "top1_agreement_vs_exact": round((a.argmax(-1) == b.argmax(-1)).float().mean().item(), 4),
        "mean_kl_vs_exact": round((lp.exp() * (lp - lq)).sum(-1).mean().item(), 5),
        "france_answer": answer.strip(),
        "mode": fast.quantize,
    }


# --- driver -------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gguf", type=Path, default=DEFAULT_GGUF)
    ap.add_argument("--systems", default=DEFAULT_SYSTEMS)
    ap.add_argument("--llama-bin", default=os.environ.get("LLAMA_BIN", "/work/llama-bin"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--quality", action="store_true")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.gguf, args.new, args.threads)
        return
    import torch

    from smolchat.model.device import cpu_has_bf16

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    result: dict[str, Any] = {
        "env": {
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "cpu": _cpu_name(),
            "cpu_bf16": cpu_has_bf16(),
            "torch": torch.__version__,
            "threads": args.threads,
            "gguf": args.gguf.name,
            "gguf_mib": round(args.gguf.stat().st_size / 2**20, 1),
            "new_tokens": args.new,
            "rounds": args.rounds,
            "load_average": os.getloadavg(),
            "python": platform.python_version(),
        },
        "systems": {},
    }
    workers: list[Worker] = []
    for system in systems:
        if system == "llama.cpp":
            continue
        print(f"loading {system} ...", file=sys.stderr, flush=True)
        workers.append(Worker(system, args))
    llama: list[tuple[float, float]] = []
    for r in range(args.rounds):
        for w in workers:
            print(f"round {r + 1} {w.system}: {w.measure():.1f} tok/s", file=sys.stderr)
        if "llama.cpp" in systems:
            llama.append(llama_bench(args))
            print(f"round {r + 1} llama.cpp: {llama[-1][0]:.1f} tok/s", file=sys.stderr)
    for w in workers:
        result["systems"][w.system] = w.close()
    if llama:
        result["systems"]["llama.cpp"] = {
            "tok_s": max(t for t, _ in llama),
            "rounds_tok_s": [round(t, 2) for t, _ in llama],
            "peak_mib": round(max(m for _, m in llama), 1),
        }
    if args.quality:
        result["quality"] = quality(args.gguf)
    result["env"]["load_average_end"] = os.getloadavg()
    print_table(result)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def print_table(result: dict[str, Any]) -> None:
    env = result["env"]
    head = f"{env['gguf']} ({env['gguf_mib']} MiB), {env['cpu']}, {env['threads']} threads"
    print(f"\n{head}, {env['new_tokens']} new tokens, best of {env['rounds']} interleaved rounds")
    print(
        f"{'system':20s} {'tok/s':>8s} {'cpu ms/tok':>10s} {'RSS loaded':>11s} {'added':>8s}",
        end="",
    )
    print(f" {'peak':>8s}  rounds")
    for name, s in result["systems"].items():
        loaded = s.get("rss_loaded_mib")
        added = loaded - s["rss_base_mib"] if loaded is not None else None
        cells = [f"{v:8.0f}" if v is not None else f"{'':8s}" for v in (loaded, added)]
        cpu = s.get("cpu_ms_per_tok")
        cpu_cell = f"{cpu:10.2f}" if cpu is not None else f"{'':10s}"
        row = f"{name:20s} {s['tok_s']:8.1f} {cpu_cell} {cells[0]:>11s} {cells[1]}"
        print(f"{row} {s['peak_mib']:8.0f}  {s['rounds_tok_s']}")
    if "quality" in result:
        print(json.dumps(result["quality"], indent=1))


if __name__ == "__main__":
    main()
