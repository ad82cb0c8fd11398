"""Text framing for vsn 1.0.0 (objects) and 2.0.0 (arrays), and vsn negotiation."""

from __future__ import annotations

import re
from typing import Any, Protocol

import orjson

from . import binary
from .frames import MAX_FRAME_BYTES, Message, ProtocolError


class Codec(Protocol):
    """What a socket needs from its serializer; one stateless instance per vsn."""

    vsn: str
    supports_binary: bool

    def decode_text(self, text: str) -> Message: ...

    def decode_binary(self, data: bytes) -> Message: ...

    def encode(self, msg: Message) -> str: ...

    def encode_raw(
        self,
        *,
        topic: str,
        event: str,
        payload_json: bytes | str,
        ref: str | None = None,
        join_ref: str | None = None,
    ) -> str: ...


class V1Codec:
    """vsn 1.0.0: one JSON object per text frame, no binary (docs/protocol.md §2)."""

    vsn: str = "1.0.0"
    supports_binary: bool = False

    def decode_text(self, text: str) -> Message:
        obj = _loads(text)
        if not isinstance(obj, dict):
            raise ProtocolError("bad_shape", "vsn 1.0.0 frames must be JSON objects")
        _require_keys(obj)
        return Message(
            topic=_string(obj["topic"], "topic"),
            event=_string(obj["event"], "event"),
            payload=obj["payload"],
            ref=_optional_ref(obj["ref"], "ref"),
            # realtime-js v1 drops undefined keys, so join_ref may be absent.
            join_ref=_optional_ref(obj.get("join_ref"), "join_ref"),
        )

    def decode_binary(self, data: bytes) -> Message:
        raise ProtocolError(
            "bad_binary", "binary frames are not supported in vsn 1.0.0"
        )

    def encode(self, msg: Message) -> str:
        # Phoenix's V1 serializer takes exactly these keys: never join_ref, and
        # always "ref", which Python's pydantic models require even when null.
        _check_payload(msg.payload)
        frame = {
            "topic": msg.topic,
            "event": msg.event,
            "payload": msg.payload,
            "ref": msg.ref,
        }
        return _dumps(frame, "frame")

    def encode_raw(
        self,
        *,
        topic: str,
        event: str,
        payload_json: bytes | str,
        ref: str | None = None,
        join_ref: str | None = None,
    ) -> str:
        # Must stay byte-identical to encode(): same key order, compact JSON.
        return "".join(
            (
                '{"topic":',
                _dumps(topic, "topic"),
                ',"event":',
                _dumps(event, "event"),
                ',"payload":',
                _as_text(payload_json),
                ',"ref":',
                _dumps(ref, "ref"),
                "}",
            )
        )


class V2Codec:
    """vsn 2.0.0: `[join_ref, ref, topic, event, payload]`, plus binary.

    See docs/protocol.md §2.
    """

    vsn: str = "2.0.0"
    supports_binary: bool = True

    def decode_text(self, text: str) -> Message:
        arr = _loads(text)
        if not isinstance(arr, list):
            raise ProtocolError("bad_shape", "vsn 2.0.0 frames must be JSON arrays")
        if len(arr) != 5:
            raise ProtocolError(
                "bad_arity", f"vsn 2.0.0 frames have 5 elements, got {len(arr)}"
            )
        join_ref, ref, topic, event, payload = arr
        return Message(
            topic=_string(topic, "topic"),
            event=_string(event, "event"),
            payload=payload,
            ref=_optional_ref(ref, "ref"),
            join_ref=_optional_ref(join_ref, "join_ref"),
        )

    def decode_binary(self, data: bytes) -> Message:
        return binary.decode_binary_frame(data)

    def encode(self, msg: Message) -> str:
        _check_payload(msg.payload)
        frame = [msg.join_ref, msg.ref, msg.topic, msg.event, msg.payload]
        return _dumps(frame, "frame")

    def encode_raw(
        self,
        *,
        topic: str,
        event: str,
        payload_json: bytes | str,
        ref: str | None = None,
        join_ref: str | None = None,
    ) -> str:
        # Must stay byte-identical to encode(): compact JSON, no spaces.
        return "".join(
            (
                "[",
                _dumps(join_ref, "join_ref"),
                ",",
                _dumps(ref, "ref"),
                ",",
                _dumps(topic, "topic"),
                ",",
                _dumps(event, "event"),
                ",",
                _as_text(payload_json),
                "]",
            )
        )

    def encode_user_broadcast(
        self,
        *,
        topic: str,
        event: str,
        payload: bytes,
        encoding: int,
        meta: bytes = b"",
    ) -> bytes:
        return binary.encode_user_broadcast(
            topic=topic, event=event, payload=payload, encoding=encoding, meta=meta
        )


V1 = V1Codec()
V2 = V2Codec()
_BY_MAJOR: dict[str, Codec] = {"1": V1, "2": V2}

# Semantic version, as Elixir's Version.parse reads it (no leading zeros).
_SEMVER = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?"
)


def codec_for_vsn(vsn: str | None) -> Codec | None:
    """The codec for a `vsn` query value, or None to refuse the connection.

    Supabase Realtime registers its serializers as "~> 1.0.0" and "~> 2.0.0":
    1.0.x and 2.0.x only (a pre-release of x.0.0 sorts below it, so it does not
    match).
    A missing vsn means 1.0.0 (Phoenix socket.ex: `params["vsn"] || "1.0.0"`).
    """
    if not vsn:
        return V1
    match = _SEMVER.fullmatch(vsn)
    if match is None:
        return None
    major, minor, patch, pre = match.groups()
    if minor != "0" or (patch == "0" and pre is not None):
        return None
    return _BY_MAJOR.get(major)


def _loads(text: str) -> Any:
    _check_text_size(text)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("invalid_json", f"frame is not valid JSON: {exc}") from None


def _check_text_size(text: str) -> None:
    # A code point is at most 4 UTF-8 bytes: only encode when it could be over.
    if len(text) * 4 <= MAX_FRAME_BYTES:
        return
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_FRAME_BYTES:
        raise ProtocolError(
            "frame_too_large", f"text frame of {size} bytes is over the limit"
        )


_V1_KEYS = ("topic", "event", "payload", "ref")


def _require_keys(obj: dict[str, Any]) -> None:
    # Phoenix's Message.from_map! requires these four; a null ref is fine
    # (Python sends it on heartbeats) but the key itself must be there.
    missing = [key for key in _V1_KEYS if key not in obj]
    if missing:
        raise ProtocolError("bad_field", f"frame is missing {', '.join(missing)}")


def _string(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise ProtocolError("bad_field", f"{name} must be a string")
    return value


def _optional_ref(value: Any, name: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ProtocolError("bad_field", f"{name} must be a string or null")
    return value


def _check_payload(payload: Any) -> None:
    # realtime-js's Phoenix socket reads payload.status on every frame and
    # Python's models want objects, so a non-object payload would break the
    # client (docs/protocol.md §2, §11).
    if not isinstance(payload, dict):
        raise ProtocolError("bad_payload", "server payloads must be JSON objects")


def _dumps(value: Any, what: str) -> str:
    try:
        return orjson.dumps(value).decode("utf-8")
    except orjson.JSONEncodeError as exc:
        raise ProtocolError("bad_payload", f"{what} is not JSON: {exc}") from None


def _as_text(payload_json: bytes | str) -> str:
    if isinstance(payload_json, str):
        return payload_json
    return payload_json.decode("utf-8")
