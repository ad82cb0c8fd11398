"""vsn 2.0.0 binary frames: kind 3 in (client push), kind 4 out.

The layout of both is in docs/protocol.md §2.
"""

from __future__ import annotations

from typing import Any

import orjson

from .frames import BROADCAST, MAX_FRAME_BYTES, Message, ProtocolError

USER_BROADCAST_PUSH = 3
USER_BROADCAST = 4
ENCODING_RAW = 0
ENCODING_JSON = 1

# kind + five uint8 lengths + encoding byte.
_PUSH_HEADER = 7
_MAX_FIELD = 255


def decode_binary_frame(data: bytes) -> Message:
    """Decode a vsn-2 binary frame; realtime-js only ever sends kind 3."""
    if len(data) > MAX_FRAME_BYTES:
        raise ProtocolError(
            "frame_too_large", f"binary frame of {len(data)} bytes is over the limit"
        )
    if not data:
        raise ProtocolError("bad_binary", "empty binary frame")
    if data[0] != USER_BROADCAST_PUSH:
        raise ProtocolError("unknown_kind", f"unsupported binary frame kind {data[0]}")
    return _decode_user_broadcast_push(data)


def _decode_user_broadcast_push(data: bytes) -> Message:
    if len(data) < _PUSH_HEADER:
        raise ProtocolError("bad_binary", "binary frame header is truncated")
    sizes, encoding = data[1:6], data[6]
    if encoding not in (ENCODING_RAW, ENCODING_JSON):
        raise ProtocolError("bad_binary", f"unknown payload encoding {encoding}")
    if _PUSH_HEADER + sum(sizes) > len(data):
        raise ProtocolError("bad_binary", "binary field lengths exceed the frame")
    fields, offset = _split_fields(data, sizes)
    join_ref, ref, topic, user_event = map(_text, fields[:4], _FIELD_NAMES)
    inner: dict[str, Any] = {
        "type": BROADCAST,
        "event": user_event,
        "payload": _user_payload(data[offset:], encoding),
    }
    meta = _metadata(fields[4])
    if meta:
        inner["meta"] = meta
    # A zero-length ref is how the frame says "no ref"; keep Message's None.
    return Message(topic, BROADCAST, inner, ref or None, join_ref or None, True)


_FIELD_NAMES = ("join_ref", "ref", "topic", "event", "metadata")


def _split_fields(data: bytes, sizes: bytes) -> tuple[list[bytes], int]:
    """Cut the length-prefixed fields; the caller has checked they fit."""
    fields, offset = [], _PUSH_HEADER
    for size in sizes:
        fields.append(data[offset : offset + size])
        offset += size
    return fields, offset


def _text(raw: bytes, name: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("bad_binary", f"{name} is not valid UTF-8") from None


def _json(raw: bytes, what: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ProtocolError("bad_binary", f"{what} is not valid JSON") from None


def _user_payload(raw: bytes, encoding: int) -> Any:
    return _json(raw, "user payload") if encoding == ENCODING_JSON else raw


def _metadata(raw: bytes) -> dict[str, Any]:
    """Supabase Realtime documents metadata as a JSON-encoded map; empty means none."""
    if not raw:
        return {}
    meta = _json(raw, "metadata")
    if not isinstance(meta, dict):
        raise ProtocolError("bad_binary", "metadata must be a JSON object")
    return meta


def encode_user_broadcast(
    *, topic: str, event: str, payload: bytes, encoding: int, meta: bytes = b""
) -> bytes:
    """Binary kind 4, the only binary kind realtime-js decodes (docs/protocol.md §2)."""
    if encoding not in (ENCODING_RAW, ENCODING_JSON):
        raise ProtocolError("bad_field", f"unknown payload encoding {encoding}")
    topic_b = _field(topic.encode("utf-8"), "topic")
    event_b = _field(event.encode("utf-8"), "event")
    meta_b = _field(meta, "metadata")
    header = bytes((USER_BROADCAST, len(topic_b), len(event_b), len(meta_b), encoding))
    return b"".join((header, topic_b, event_b, meta_b, payload))


def _field(raw: bytes, name: str) -> bytes:
    """Lengths are one byte on the wire, so a longer field cannot be framed."""
    if len(raw) > _MAX_FIELD:
        raise ProtocolError(
            "bad_field", f"{name} is {len(raw)} bytes, over the {_MAX_FIELD} limit"
        )
    return raw
