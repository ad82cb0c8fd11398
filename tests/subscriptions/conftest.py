"""A local webhook receiver, and helpers for durable subscriptions."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest

from tests.subscriptions.support import form_channel


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Receiver:
    """An HTTP endpoint on a free loopback port; fails the first `fail_first` POSTs."""

    fail_first: int = 0
    status: int = 500
    delay: float = 0.0
    attempts: int = 0
    received: list[Delivery] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def handle(self, headers: dict[str, str], body: bytes) -> int:
        time.sleep(self.delay)
        with self.lock:
            self.attempts += 1
            if self.attempts <= self.fail_first:
                return self.status
            self.received.append(Delivery(headers, body))
            return 204

    @property
    def seqs(self) -> list[int]:
        return [d.json["change"]["seq"] for d in self.received]


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    servers: list[ThreadingHTTPServer] = []

    def start(**kwargs: Any) -> Receiver:
        state = Receiver(**kwargs)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                code = state.handle(dict(self.headers.items()), body)
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        return state

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def webhook_settings(settings: Any) -> Any:
    settings.HERALD_WEBHOOK_ALLOW_PRIVATE = True  # the receiver is on loopback
    settings.HERALD_WEBHOOK_BACKOFF_BASE = 0.01
    settings.HERALD_WEBHOOK_BACKOFF_MAX = 0.05
    settings.HERALD_WEBHOOK_TIMEOUT = 5
    return settings


@pytest.fixture
def form_responses(tenant: Any) -> Any:
    return form_channel(tenant)
