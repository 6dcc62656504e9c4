"""A webhook endpoint on loopback for tests: keeps every request it gets."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# A stand-in platform's own check of a request: (status, JSON body or None) from the request it got.
Responder = Callable[[dict[str, Any]], tuple[int, Any]]


class Receiver:
    """A webhook endpoint on loopback that keeps every request it gets. A path answers its `status_for`
    status (else 200), or what its `responders` entry makes of the request (a platform's own checks)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status_for: dict[str, int] = {}  # path -> the status it answers (else 200)
        self.responders: dict[str, Responder] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                request = {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
                outer.requests.append(request)
                responder = outer.responders.get(self.path)
                status, answer = responder(request) if responder else (outer.status_for.get(self.path, 200), None)
                data = json.dumps(answer).encode() if answer is not None else b""
                self.send_response(status)
                if data:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = _answer
            do_GET = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def wait_for(self, count: int, timeout: float = 10) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.requests
