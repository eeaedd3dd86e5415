"""Running the app: uvicorn on a socket bound by us (port 0 picks a free one), in the
foreground (``smolchat serve``) or on a thread (tests, benchmarks)."""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from smolchat.backend.types import Backend
from smolchat.errors import SmolchatError
from smolchat.serve.app import ServeOptions, create_app

__all__ = [
    "RunningServer",
    "bind",
    "is_loopback",
    "log_to_stderr",
    "serve",
    "start_in_thread",
    "warn_if_exposed",
]


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (SmolchatError, one line, if it cannot be had)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise SmolchatError(f"cannot listen on {host!r}: {exc.strerror or exc}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        what = exc.strerror or str(exc)
        hint = " (another server uses it? pick another --port)" if exc.errno == 98 else ""
        raise SmolchatError(f"cannot listen on {host}:{port}: {what}{hint}") from None
    sock.set_inheritable(True)
    return sock


def log_to_stderr(line: str) -> None:
    print(f"smolchat serve: {line}", file=sys.stderr, flush=True)


def _uvicorn_server(app: Any) -> Any:
    import uvicorn

    config = uvicorn.Config(
        app,
        log_level="warning",  # our own request lines replace uvicorn's access log
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
    )
    return uvicorn.Server(config)


def warn_if_exposed(host: str, api_key: str | None) -> None:
    """One warning line on stderr when ``host`` reaches beyond this machine without a key."""
    if not is_loopback(host) and api_key is None:
        print(
            f"smolchat serve: warning: listening on {host}, beyond this machine, without an "
            "API key: anyone who can reach it can use the model (give --api-key KEY)",
            file=sys.stderr,
            flush=True,
        )


def serve(backend: Backend, options: ServeOptions, sock: socket.socket) -> None:
    """Serve on ``sock`` (from :func:`bind`) until Ctrl+C, in the foreground (uvicorn handles
    the signals)."""
    app = create_app(backend, options)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(
        f"smolchat serve: {options.model_id} on http://{shown}:{port}/v1 · "
        f"{backend.description} · Ctrl+C stops",
        file=sys.stderr,
        flush=True,
    )
    try:
        _uvicorn_server(app).run(sockets=[sock])
    finally:
        sock.close()


@dataclass
class RunningServer:
    """A server on a thread; ``url`` ends with ``/v1``; ``stop()`` ends it."""

    host: str
    port: int
    server: Any
    thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_in_thread(
    backend: Backend, options: ServeOptions, host: str = "127.0.0.1", port: int = 0
) -> RunningServer:
    """Start the server on a thread and return once it accepts connections."""
    sock = bind(host, port)
    server = _uvicorn_server(create_app(backend, options))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="smolchat-serve", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise SmolchatError("the server did not start")
        time.sleep(0.02)
    return RunningServer(host, sock.getsockname()[1], server, thread)
