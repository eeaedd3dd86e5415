"""A stand-in for the Hugging Face hub on 127.0.0.1: enough of its API for snapshot_download.

It serves one repo from a local folder: model info, the file tree, and the files (HEAD and
GET, with ranges). ``stall`` names a file whose first download sends half its bytes and then
hangs, so that a test can kill the downloading process in the middle of it.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

SHA = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self, repo_id: str, folder: Path) -> None:
        self.repo_id = repo_id
        self.files = {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()}
        self.log: list[tuple[str, str, str | None]] = []  # (method, file or API path, Range)
        self.stall: str | None = None
        self.half_sent = threading.Event()
        self._release = threading.Event()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_HEAD(self) -> None:
                hub._handle(self, head=True)

            def do_GET(self) -> None:
                hub._handle(self, head=False)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()

    def gets(self, name: str) -> int:
        """How many times the file ``name`` was downloaded."""
        return sum(1 for method, path, _ in self.log if method == "GET" and path == name)

    def _etag(self, name: str) -> str:
        return hashlib.sha256(self.files[name]).hexdigest()

    def _json(self, h: BaseHTTPRequestHandler, obj: object) -> None:
        body = json.dumps(obj).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _tree(self) -> list[dict]:
        entries = []
        for name, data in self.files.items():
            entry = {"type": "file", "oid": self._etag(name)[:40], "size": len(data), "path": name}
            if name.endswith(".safetensors"):
                entry["lfs"] = {"oid": self._etag(name), "size": len(data), "pointerSize": 134}
            entries.append(entry)
        return entries

    def _handle(self, h: BaseHTTPRequestHandler, *, head: bool) -> None:
        path = unquote(urlparse(h.path).path)
        api = f"/api/models/{self.repo_id}"
        resolve = f"/{self.repo_id}/resolve/"
        name = path[len(resolve) :].partition("/")[2] if path.startswith(resolve) else path
        self.log.append((h.command, name, h.headers.get("Range")))
        if path.startswith(api + "/revision/"):
            siblings = [{"rfilename": n} for n in self.files]
            return self._json(h, {"id": self.repo_id, "sha": SHA, "siblings": siblings})
        if path.startswith(api + "/tree/"):
            return self._json(h, self._tree())
        if not path.startswith(resolve) or name not in self.files:
            h.send_response(404)
            h.send_header("X-Error-Code", "EntryNotFound")
            h.end_headers()
            return
        data = self.files[name]
        start = 0
        if h.headers.get("Range") and not head:
            start = int(h.headers["Range"].split("=")[1].split("-")[0])
        h.send_response(206 if start else 200)
        h.send_header("X-Repo-Commit", SHA)
        h.send_header("ETag", f'"{self._etag(name)}"')
        h.send_header("Content-Length", str(len(data) - start))
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.end_headers()
        if head:
            return
        body = data[start:]
        if name == self.stall:
            self.stall = None  # only the first download stalls
            h.wfile.write(body[: len(body) // 2])
            h.wfile.flush()
            self.half_sent.set()
            self._release.wait(120)
            return
        h.wfile.write(body)
