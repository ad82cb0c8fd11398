"""The logical Phoenix message, its error type, names and builders.

See docs/protocol.md §2 (frames) and §9 (leave, close and errors).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Supabase Realtime's websocket `max_frame_size` (docs/protocol.md §1).
MAX_FRAME_BYTES = 5_000_000

PHOENIX_TOPIC = "phoenix"

PHX_JOIN = "phx_join"
PHX_LEAVE = "phx_leave"
PHX_REPLY = "phx_reply"
PHX_CLOSE = "phx_close"
PHX_ERROR = "phx_error"
HEARTBEAT = "heartbeat"
ACCESS_TOKEN = "access_token"
BROADCAST = "broadcast"
PRESENCE = "presence"
PRESENCE_STATE = "presence_state"
PRESENCE_DIFF = "presence_diff"
POSTGRES_CHANGES = "postgres_changes"
SYSTEM = "system"


class ProtocolError(Exception):
    """A frame the codec cannot decode or encode.

    `code` is stable, for logs and tests: invalid_json, bad_shape (object vs array),
    bad_arity, bad_field, bad_binary, unknown_kind, frame_too_large, bad_payload.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"ProtocolError({self.code!r}, {self.message!r})"


@dataclass(slots=True)
class Message:
    """One Phoenix message, whatever framing it came in or goes out with.

    `binary` is True for messages decoded from a binary kind-3 frame; with raw
    encoding (0) the inner `payload["payload"]` is then `bytes`, which only a
    binary kind-4 frame can carry back out.
    """

    topic: str
    event: str
    payload: Any
    ref: str | None
    join_ref: str | None
    binary: bool = False


def reply(
    topic: str, ref: str | None, join_ref: str | None, status: str, response: Any
) -> Message:
    """A `phx_reply` to the push `ref`; `response` must be an object for Python."""
    payload = {"status": status, "response": response}
    return Message(topic, PHX_REPLY, payload, ref, join_ref)


def push(topic: str, event: str, payload: Any, join_ref: str | None = None) -> Message:
    """A server push: never a ref; join_ref set for channel pushes, None for fan-out."""
    return Message(topic, event, payload, None, join_ref)


def close(topic: str, join_ref: str | None) -> Message:
    """`phx_close`: Phoenix puts the channel's join ref in both ref fields.

    See docs/protocol.md §9.
    """
    return Message(topic, PHX_CLOSE, {}, join_ref, join_ref)


def error_frame(topic: str, join_ref: str | None) -> Message:
    """`phx_error` for a crashed channel, shaped like `phx_close` (protocol.md §9)."""
    return Message(topic, PHX_ERROR, {}, join_ref, join_ref)
