"""A raw Phoenix socket for tests that check frames exactly (sync websockets)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import orjson
from websockets.sync.client import ClientConnection, connect

Frame = dict[str, Any]


class Socket:
    """Speaks vsn 1.0.0 or 2.0.0 and hands back frames as dicts."""

    def __init__(
        self,
        base_url: str,
        apikey: str,
        *,
        vsn: str = "1.0.0",
        headers: dict[str, str] | None = None,
        query: str = "",
    ) -> None:
        self.vsn = vsn
        self.refs = itertools.count(1)
        # `headers`: a browser's Cookie header, say; `query`: more parameters.
        self.ws: ClientConnection = connect(
            f"{base_url}/realtime/v1/websocket?apikey={apikey}&vsn={vsn}{query}",
            max_size=None,
            open_timeout=15,
            additional_headers=headers,
        )

    def push(
        self,
        topic: str,
        event: str,
        payload: Any,
        *,
        join_ref: str | None = None,
        ref: str | None = None,
    ) -> str:
        ref = ref or str(next(self.refs))
        if self.vsn == "2.0.0":
            self.ws.send(orjson.dumps([join_ref, ref, topic, event, payload]).decode())
        else:
            frame = {
                "topic": topic,
                "event": event,
                "payload": payload,
                "ref": ref,
                "join_ref": join_ref,
            }
            self.ws.send(orjson.dumps(frame).decode())
        return ref

    def join(
        self,
        topic: str,
        *,
        bindings: list[dict[str, Any]] | None = None,
        token: str | None = None,
        private: bool = False,
        **config: Any,
    ) -> Frame:
        payload: dict[str, Any] = {
            "config": {"postgres_changes": bindings or [], "private": private, **config}
        }
        if token:
            payload["access_token"] = token
        ref = str(next(self.refs))
        self.push(f"realtime:{topic}", "phx_join", payload, join_ref=ref, ref=ref)
        self.join_ref = ref
        return self.reply_to(ref)

    def send_binary(self, frame: bytes) -> None:
        self.ws.send(frame)

    def recv(self, timeout: float = 10) -> Frame:
        raw = self.ws.recv(timeout=timeout)
        if isinstance(raw, bytes):
            return {"event": "binary", "topic": None, "ref": None, "bytes": raw}
        data = orjson.loads(raw)
        if isinstance(data, list):
            join_ref, ref, topic, event, payload = data
            return {
                "join_ref": join_ref,
                "ref": ref,
                "topic": topic,
                "event": event,
                "payload": payload,
                "raw": data,
            }
        return {**data, "raw": data}

    def recv_until(self, match: Callable[[Frame], bool], timeout: float = 10) -> Frame:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            frame = self.recv(timeout=left)
            if match(frame):
                return frame
        raise TimeoutError("no matching frame")

    def reply_to(self, ref: str, timeout: float = 10) -> Frame:
        return self.recv_until(
            lambda f: f["event"] == "phx_reply" and f["ref"] == ref, timeout
        )

    def changes(self, count: int, timeout: float = 10) -> list[Frame]:
        return [
            self.recv_until(lambda f: f["event"] == "postgres_changes", timeout)
            for _ in range(count)
        ]

    def quiet(self, match: Callable[[Frame], bool], wait: float = 0.5) -> bool:
        """True when no matching frame arrives within `wait` seconds."""
        try:
            self.recv_until(match, wait)
        except TimeoutError:
            return True
        return False

    def close(self) -> None:
        self.ws.close()
