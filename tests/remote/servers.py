"""Real servers for the remote backend's tests.

* :func:`smollm2_folder`: the SmolLM2 GGUF as a plain safetensors folder (``transformers serve``
  does not load the GGUF itself: its config has no ``architectures``), built once and cached in
  ``~/.cache/smolchat-tests/``.
* :class:`TransformersServe`: ``transformers serve FOLDER`` on a free 127.0.0.1 port.
* :class:`ScriptedServer`: a small OpenAI-compatible HTTP server (stdlib ``http.server`` in a
  thread) whose replies the test sets: words streamed one chunk a token (``never_stop``, a
  context limit, a cut stream), status errors (401, 404, 429, 500), garbage, a reasoning field,
  inline ``<think>``, a template that ignores ``enable_thinking``. It records the requests.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

CACHE = Path.home() / ".cache" / "smolchat-tests"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
FOLDER = CACHE / "SmolLM2-135M-Instruct-safetensors"

_BUILD = r"""
import sys, torch, transformers
from pathlib import Path
gguf, out = Path(sys.argv[1]), Path(sys.argv[2])
kw = dict(gguf_file=gguf.name)
tok = transformers.AutoTokenizer.from_pretrained(gguf.parent, **kw)
m = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kw)
cfg = m.config
if hasattr(cfg, "quantization_config"):
    del cfg.quantization_config
cfg.architectures = ["LlamaForCausalLM"]
plain = transformers.LlamaForCausalLM(cfg)
plain.load_state_dict(m.state_dict())
plain.save_pretrained(out)
tok.save_pretrained(out)
"""


def smollm2_folder(gguf: Path) -> Path:
    """The GGUF's weights (dequantized, float32) as a safetensors folder with its tokenizer."""
    if (FOLDER / "config.json").is_file() and (FOLDER / "tokenizer.json").is_file():
        return FOLDER
    tmp = FOLDER.with_name(FOLDER.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run([sys.executable, "-c", _BUILD, str(gguf), str(tmp)], check=True)
    shutil.rmtree(FOLDER, ignore_errors=True)
    tmp.rename(FOLDER)
    return FOLDER


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TransformersServe:
    """``transformers serve FOLDER --host 127.0.0.1 --port P``, stopped by :meth:`stop`."""

    def __init__(self, folder: Path, log: Path, ready_s: float = 240.0) -> None:
        exe = Path(sys.executable).with_name("transformers")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.model = str(folder)
        self.log = log
        command = [str(exe) if exe.exists() else "transformers", "serve", str(folder)]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        with log.open("wb") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + ready_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"transformers serve exited: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"transformers serve not ready in {ready_s:.0f} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# --- the scripted server ------------------------------------------------------------------
@dataclass
class Script:
    """What the scripted server does for the next ``POST /chat/completions``.

    ``words``: the reply's content chunks (one a token); ``reasoning``: chunks sent in the
    ``reasoning_field`` before them; ``status``: an HTTP error instead (with ``body``);
    ``garbage``: bytes that are not SSE; ``cut_after``: drop the connection after that many
    chunks; ``finish``: the finish reason of the last chunk; ``usage``: send usage figures;
    ``delay_s``: between chunks; ``forever``: repeat ``words`` until the client goes.
    """

    words: list[str] = field(default_factory=lambda: ["Paris", "."])
    reasoning: list[str] = field(default_factory=list)
    reasoning_field: str = "reasoning_content"
    status: int | None = None
    body: str = ""
    garbage: bytes | None = None
    cut_after: int | None = None
    finish: str = "stop"
    usage: bool = True
    delay_s: float = 0.0
    forever: bool = False
    prompt_tokens: int = 20
    error_event: str | None = None  # after the words: an SSE error event (as vLLM sends one)


class ScriptedServer:
    """An OpenAI-compatible server on 127.0.0.1 whose answers the test scripts."""

    def __init__(
        self,
        models: list[dict[str, Any]] | None = None,
        key: str | None = None,
        prompt_count: Callable[[dict[str, Any]], int] | None = None,
    ) -> None:
        self.prompt_count = prompt_count  # usage's prompt_tokens for a request (else the script's)
        self.models = (
            models if models is not None else [{"id": "scripted/model", "object": "model"}]
        )
        self.key = key
        self.script = Script()
        self.models_status: int | None = None
        self.models_body: bytes | None = None
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.disconnected = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes, kind: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _authorized(self) -> bool:
                if server.key is None:
                    return True
                if self.headers.get("Authorization") == f"Bearer {server.key}":
                    return True
                error = {"error": {"message": "Invalid API key", "type": "auth"}}
                self._send(401, json.dumps(error).encode())
                return False

            def do_GET(self) -> None:
                server.headers.append(dict(self.headers))
                if self.path.split("?")[0].rstrip("/") != "/v1/models":
                    self._send(404, b"<html>not found</html>", "text/html")
                    return
                if not self._authorized():
                    return
                if server.models_status is not None:
                    self._send(server.models_status, server.models_body or b"{}")
                    return
                if server.models_body is not None:
                    self._send(200, server.models_body)
                    return
                self._send(200, json.dumps({"object": "list", "data": server.models}).encode())

            def do_POST(self) -> None:
                server.headers.append(dict(self.headers))
                length = int(self.headers.get("Content-Length") or 0)
                request = json.loads(self.rfile.read(length) or b"{}")
                server.requests.append(request)
                if self.path.split("?")[0] != "/v1/chat/completions":
                    self._send(404, b'{"error": {"message": "no such route"}}')
                    return
                if not self._authorized():
                    return
                s = server.script
                if s.status is not None:
                    self._send(s.status, s.body.encode())
                    return
                if s.garbage is not None:
                    self._send(200, s.garbage, "text/event-stream")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                self._stream(request, s)

            def _chunk(
                self, delta: dict[str, Any], finish: str | None = None, **extra: Any
            ) -> None:
                choice = {"index": 0, "delta": delta, "finish_reason": finish}
                payload = {
                    "id": "c1",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": request_model(self),
                    "choices": [choice] if delta is not None else [],
                    **extra,
                }
                self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
                self.wfile.flush()

            def _stream(self, request: dict[str, Any], s: Script) -> None:
                limit = int(request.get("max_tokens") or 1_000_000)
                sent = 0
                finish = s.finish
                try:
                    self._chunk({"role": "assistant", "content": ""})
                    parts = [(s.reasoning_field, r) for r in s.reasoning]
                    parts += [("content", w) for w in s.words]
                    i = 0
                    while True:
                        if i >= len(parts):
                            if not s.forever:
                                break
                            i = 0
                        if sent >= limit:
                            finish = "length"
                            break
                        if s.cut_after is not None and sent >= s.cut_after:
                            self.connection.shutdown(socket.SHUT_RDWR)
                            return
                        name, text = parts[i]
                        self._chunk({name: text})
                        sent += 1
                        i += 1
                        if s.delay_s:
                            time.sleep(s.delay_s)
                    if s.error_event is not None:
                        error = {"error": {"message": s.error_event, "type": "server_error"}}
                        self.wfile.write(f"data: {json.dumps(error)}\n\n".encode())
                        self.wfile.flush()
                        return
                    prompt = s.prompt_tokens
                    if server.prompt_count is not None:
                        prompt = server.prompt_count(request)
                    usage = {
                        "prompt_tokens": prompt,
                        "completion_tokens": sent,
                        "total_tokens": prompt + sent,
                    }
                    self._chunk({}, finish)
                    if s.usage:
                        self._chunk(None, None, usage=usage)  # type: ignore[arg-type]
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    server.disconnected.set()

        def request_model(handler: Any) -> str:
            return str(server.models[0]["id"]) if server.models else "?"

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()
