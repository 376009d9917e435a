"""A local HTTP server that records every request and answers as told (notification tests).

    with capture_server() as server:
        server.answer("/hook", 500)  # a status, or callable(request) -> (status, body)
        ... url = server.url + "/hook" ...
        request = server.wait_for(lambda r: r.path == "/hook")

stdlib only (``http.server`` in a thread on 127.0.0.1, an ephemeral port). By default it
answers 200 ``{"errcode": 0, "code": "OK"}``, and ``GET /cgi-bin/token`` like WeChat does, so
one server can stand in for the WeChat API, an SMS gateway and a webhook receiver.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


@dataclass(frozen=True)
class Captured:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode())

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


Answer = int | Callable[[Captured], tuple[int, Any]]


class CaptureServer:
    def __init__(self) -> None:
        self.requests: list[Captured] = []
        self.answers: dict[str, Answer] = {}
        self.url = ""
        self._lock = threading.Lock()

    def answer(self, path: str, answer: Answer) -> None:
        self.answers[path] = answer

    def respond(self, request: Captured) -> tuple[int, Any]:
        with self._lock:
            self.requests.append(request)
        answer = self.answers.get(request.path)
        if callable(answer):
            return answer(request)
        if answer is not None:
            return answer, {"code": "error", "errcode": answer}
        if request.path == "/cgi-bin/token":
            return 200, {"access_token": "TEST_ACCESS_TOKEN", "expires_in": 7200}
        return 200, {"errcode": 0, "errmsg": "ok", "code": "OK"}

    def matching(self, predicate: Callable[[Captured], bool]) -> list[Captured]:
        with self._lock:
            return [r for r in self.requests if predicate(r)]

    def wait_for(self, predicate: Callable[[Captured], bool], timeout: float = 15.0,
                 count: int = 1) -> list[Captured]:
        """The matching requests once there are ``count`` of them (bounded wait)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.matching(predicate)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{count} matching request(s) not seen within {timeout}s; "
                                     f"got {[(r.method, r.path) for r in self.requests]}")
            time.sleep(0.02)


@contextmanager
def capture_server() -> Iterator[CaptureServer]:
    server = CaptureServer()

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            parsed = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            request = Captured(self.command, parsed.path, parse_qs(parsed.query),
                               dict(self.headers.items()), body)
            status, answer = server.respond(request)
            data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _handle

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    server.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
