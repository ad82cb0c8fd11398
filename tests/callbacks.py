"""A shop's authorization endpoint on loopback, for the callback's tests.

It checks every request's signature with the verifier the README documents
(executed from the README itself, so the documented code is the tested code).
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parent.parent / "README.md"

Verifier = Callable[..., bool]


def readme_verifier() -> Verifier:
    """`herald_signature_ok`, as the README's Authorization callback shows it."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    (block,) = [b for b in blocks if "def herald_signature_ok" in b]
    namespace: dict[str, Any] = {}
    exec(block, namespace)
    return namespace["herald_signature_ok"]  # type: ignore[no-any-return]


@dataclass
class Call:
    body: dict[str, Any]
    raw: bytes
    signature: str
    signature_ok: bool


Answer = Callable[[dict[str, Any]], tuple[int, bytes]]


def allow(**fields: Any) -> Answer:
    return lambda asked: (200, json.dumps({"allow": True, **fields}).encode())


def deny(reason: str) -> Answer:
    return lambda asked: (200, json.dumps({"allow": False, "reason": reason}).encode())


class CallbackServer:
    """Answers with `self.answer(asked)`; `hang_on` holds answers until released.

    A request whose signature fails the README's verifier is answered 403,
    as the README's view does.
    """

    def __init__(self) -> None:
        self.secret = ""
        self.answer: Answer = deny("not configured")
        self.calls: list[Call] = []
        self.hang_on: set[str] = set()  # these types wait for `release`
        self.release = threading.Event()
        # True: no Content-Length, the body ends when the connection closes.
        self.unsized = False
        self.verify = readme_verifier()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    server.handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/herald/auth"

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        raw = handler.rfile.read(int(handler.headers.get("Content-Length", "0")))
        header = handler.headers.get("X-Herald-Signature", "")
        ok = self.verify(self.secret, header, raw)
        body = json.loads(raw)
        self.calls.append(Call(body=body, raw=raw, signature=header, signature_ok=ok))
        if body.get("type") in self.hang_on:
            self.release.wait(20)
        status, answer = (403, b"{}") if not ok else self.answer(body)
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        if not self.unsized:
            handler.send_header("Content-Length", str(len(answer)))
        handler.end_headers()
        handler.wfile.write(answer)

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
