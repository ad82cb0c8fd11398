"""Wire framing against the frames captured from the official clients.

Client frames are quoted verbatim as the official clients sent them (the Python
`realtime` client, realtime-js and supabase-js, captured on the wire); what they
mean is in docs/protocol.md §2-§4.
"""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from realtime.protocol import (
    BROADCAST,
    HEARTBEAT,
    MAX_FRAME_BYTES,
    PHOENIX_TOPIC,
    PHX_CLOSE,
    PHX_ERROR,
    PHX_REPLY,
    V1,
    V2,
    Codec,
    Message,
    ProtocolError,
    V1Codec,
    V2Codec,
    close,
    codec_for_vsn,
    error_frame,
    push,
    reply,
)

TOPIC = "realtime:live:site-abc"

# --- Python `realtime` client (vsn 1.0.0), as captured --------------------------------

PY_JOIN = '{"event":"phx_join","payload":{"config":{"broadcast":{"ack":false,"self":false},"presence":{"key":"","enabled":true},"private":false,"postgres_changes":[{"event":"*","schema":"public","table":"live_updates","filter":"site_id=eq.abc"}]},"access_token":"eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYW5vbiJ9.sig-ANON"},"topic":"realtime:live:site-abc","ref":"1","join_ref":"1"}'  # noqa: E501
PY_HEARTBEAT = (
    '{"event":"heartbeat","payload":{},"topic":"phoenix","ref":null,"join_ref":null}'
)
PY_TRACK = '{"event":"presence","payload":{"event":"track","payload":{"user":"py-user","online_at":"2025-01-01T00:00:00Z"}},"topic":"realtime:live:site-abc","ref":"2","join_ref":"1"}'  # noqa: E501
PY_BROADCAST = '{"event":"broadcast","payload":{"type":"broadcast","event":"x","payload":{"from":"python","msg":"hello"}},"topic":"realtime:live:site-abc","ref":"3","join_ref":"1"}'  # noqa: E501
PY_ACCESS_TOKEN = '{"event":"access_token","payload":{"access_token":"eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYXV0aGVudGljYXRlZCJ9.sig-NEW"},"topic":"realtime:live:site-abc","ref":"4","join_ref":"1"}'  # noqa: E501
PY_UNTRACK = '{"event":"presence","payload":{"event":"untrack","payload":{}},"topic":"realtime:live:site-abc","ref":"5","join_ref":"1"}'  # noqa: E501
PY_LEAVE = '{"event":"phx_leave","payload":{},"topic":"realtime:live:site-abc","ref":"6","join_ref":"1"}'  # noqa: E501

# realtime-js with vsn 1.0.0 and its heartbeat (docs/protocol.md §3):
# undefined keys are dropped, so there is no join_ref at all.
JS_V1_BROADCAST = '{"topic":"realtime:live:site-abc","event":"broadcast","payload":{"type":"broadcast","event":"x","payload":{"from":"realtime","msg":"hello"}},"ref":"8","join_ref":"6"}'  # noqa: E501
JS_V1_HEARTBEAT = '{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"7"}'

# --- realtime-js / supabase-js (vsn 2.0.0), as captured -------------------------------

JS_JOIN = '["6","6","realtime:live:site-abc","phx_join",{"config":{"broadcast":{"ack":false,"self":false},"presence":{"key":"","enabled":true},"postgres_changes":[{"event":"*","schema":"public","table":"live_updates","filter":"site_id=eq.abc"}],"private":false},"access_token":"eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYXV0aGVudGljYXRlZCJ9.sig-USER"}]'  # noqa: E501
JS_TRACK = '["6","7","realtime:live:site-abc","presence",{"type":"presence","event":"track","payload":{"user":"js-user","online_at":"2025-01-01T00:00:00Z"}}]'  # noqa: E501
JS_ACCESS_TOKEN = '["6","9","realtime:live:site-abc","access_token",{"access_token":"eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYXV0aGVudGljYXRlZCJ9.sig-NEW"}]'  # noqa: E501
JS_HEARTBEAT = '[null,"10","phoenix","heartbeat",{}]'
JS_UNTRACK = '["6","11","realtime:live:site-abc","presence",{"type":"presence","event":"untrack"}]'  # noqa: E501
JS_LEAVE = '["6","12","realtime:live:site-abc","phx_leave",{}]'

JS_BINARY_BROADCAST = bytes.fromhex(
    "0301011601000136387265616c74696d653a6c6976653a736974652d616263787b2266726f6d22"
    "3a227265616c74696d65222c226d7367223a2268656c6c6f227d"
)
# ArrayBuffer payload, encoding 0, as realtime-js sends it.
JS_RAW_BROADCAST = (
    bytes.fromhex("03010116030000") + b"68" + TOPIC.encode() + b"bin" + b"\x01\x02\x03"
)
SERVER_KIND4 = bytes.fromhex(
    "04160100017265616c74696d653a6c6976653a736974652d616263787b2266726f6d223a227365"
    "727665722d62696e617279222c226e223a327d"
)


def _kind3(
    *,
    join_ref: bytes = b"1",
    ref: bytes = b"3",
    topic: bytes = b"realtime:room1",
    event: bytes = b"cursor-pos",
    meta: bytes = b"",
    encoding: int = 1,
    payload: bytes = b'{"x":1}',
) -> bytes:
    fields = (join_ref, ref, topic, event, meta)
    header = bytes([3, *map(len, fields), encoding])
    return header + b"".join(fields) + payload


# --- decoding what the clients send ---------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "event", "ref", "join_ref"),
    [
        (PY_JOIN, "phx_join", "1", "1"),
        (PY_HEARTBEAT, "heartbeat", None, None),
        (PY_TRACK, "presence", "2", "1"),
        (PY_BROADCAST, "broadcast", "3", "1"),
        (PY_ACCESS_TOKEN, "access_token", "4", "1"),
        (PY_UNTRACK, "presence", "5", "1"),
        (PY_LEAVE, "phx_leave", "6", "1"),
        (JS_V1_BROADCAST, "broadcast", "8", "6"),
        (JS_V1_HEARTBEAT, "heartbeat", "7", None),
    ],
)
def test_v1_decodes_client_frames(
    frame: str, event: str, ref: str | None, join_ref: str | None
) -> None:
    msg = V1.decode_text(frame)
    assert (msg.event, msg.ref, msg.join_ref) == (event, ref, join_ref)
    assert msg.payload == orjson.loads(frame)["payload"]
    assert msg.binary is False


def test_v1_decodes_python_join_payload() -> None:
    msg = V1.decode_text(PY_JOIN)
    assert msg.topic == TOPIC
    bindings = msg.payload["config"]["postgres_changes"]
    assert bindings == [
        {
            "event": "*",
            "schema": "public",
            "table": "live_updates",
            "filter": "site_id=eq.abc",
        }
    ]


def test_v1_heartbeat_topic_is_phoenix() -> None:
    msg = V1.decode_text(PY_HEARTBEAT)
    assert (msg.topic, msg.event, msg.payload) == (PHOENIX_TOPIC, HEARTBEAT, {})


@pytest.mark.parametrize(
    ("frame", "topic", "event", "ref", "join_ref"),
    [
        (JS_JOIN, TOPIC, "phx_join", "6", "6"),
        (JS_TRACK, TOPIC, "presence", "7", "6"),
        (JS_ACCESS_TOKEN, TOPIC, "access_token", "9", "6"),
        (JS_HEARTBEAT, "phoenix", "heartbeat", "10", None),
        (JS_UNTRACK, TOPIC, "presence", "11", "6"),
        (JS_LEAVE, TOPIC, "phx_leave", "12", "6"),
    ],
)
def test_v2_decodes_client_frames(
    frame: str, topic: str, event: str, ref: str, join_ref: str | None
) -> None:
    msg = V2.decode_text(frame)
    assert (msg.topic, msg.event, msg.ref, msg.join_ref) == (
        topic,
        event,
        ref,
        join_ref,
    )
    assert msg.payload == orjson.loads(frame)[4]


def test_v2_untrack_payload_has_no_inner_payload() -> None:
    msg = V2.decode_text(JS_UNTRACK)
    assert msg.payload == {"type": "presence", "event": "untrack"}


def test_v2_decodes_captured_binary_broadcast() -> None:
    msg = V2.decode_binary(JS_BINARY_BROADCAST)
    assert msg == Message(
        topic=TOPIC,
        event=BROADCAST,
        payload={
            "type": "broadcast",
            "event": "x",
            "payload": {"from": "realtime", "msg": "hello"},
        },
        ref="8",
        join_ref="6",
        binary=True,
    )


def test_v2_decodes_raw_binary_broadcast() -> None:
    msg = V2.decode_binary(JS_RAW_BROADCAST)
    assert msg.payload == {
        "type": "broadcast",
        "event": "bin",
        "payload": b"\x01\x02\x03",
    }
    assert isinstance(msg.payload["payload"], bytes)
    assert (msg.topic, msg.ref, msg.join_ref, msg.binary) == (TOPIC, "8", "6", True)


def test_v2_decodes_spec_cursor_example() -> None:
    frame = _kind3()
    assert frame[:7] == bytes.fromhex("0301010e0a0001")
    msg = V2.decode_binary(frame)
    assert msg.topic == "realtime:room1"
    assert msg.payload == {
        "type": "broadcast",
        "event": "cursor-pos",
        "payload": {"x": 1},
    }
    assert (msg.ref, msg.join_ref) == ("3", "1")


def test_binary_metadata_becomes_meta() -> None:
    frame = _kind3(meta=b'{"id":"abc"}')
    assert V2.decode_binary(frame).payload["meta"] == {"id": "abc"}


def test_binary_empty_metadata_object_adds_no_meta() -> None:
    assert "meta" not in V2.decode_binary(_kind3(meta=b"{}")).payload


def test_binary_empty_refs_become_none() -> None:
    msg = V2.decode_binary(_kind3(join_ref=b"", ref=b""))
    assert (msg.ref, msg.join_ref) == (None, None)


def test_binary_accepts_non_ascii_topic() -> None:
    msg = V2.decode_binary(_kind3(topic="realtime:café".encode()))
    assert msg.topic == "realtime:café"


# --- encoding what the clients must accept --------------------------------------------

BINDING = {
    "id": 30636876,
    "event": "*",
    "schema": "public",
    "table": "live_updates",
    "filter": "site_id=eq.abc",
}
JOIN_OK = {"postgres_changes": [BINDING]}
SYSTEM_PAYLOAD = {
    "channel": "live:site-abc",
    "extension": "postgres_changes",
    "message": "Subscribed to PostgreSQL",
    "status": "ok",
}
BROADCAST_PAYLOAD = {
    "event": "x",
    "payload": {"from": "server", "n": 1},
    "type": "broadcast",
}


def test_v2_join_reply_matches_capture() -> None:
    msg = reply(TOPIC, "6", "6", "ok", JOIN_OK)
    assert V2.encode(msg) == (
        '["6","6","realtime:live:site-abc","phx_reply",{"status":"ok","response":'
        '{"postgres_changes":[{"id":30636876,"event":"*","schema":"public",'
        '"table":"live_updates","filter":"site_id=eq.abc"}]}}]'
    )


def test_v1_join_reply_matches_capture() -> None:
    captured = '{"event":"phx_reply","payload":{"status":"ok","response":{"postgres_changes":[{"id":30636876,"event":"*","schema":"public","table":"live_updates","filter":"site_id=eq.abc"}]}},"ref":"1","topic":"realtime:live:site-abc"}'  # noqa: E501
    encoded = V1.encode(reply(TOPIC, "1", "1", "ok", JOIN_OK))
    assert orjson.loads(encoded) == orjson.loads(captured)


def test_v2_system_push_matches_capture() -> None:
    encoded = V2.encode(push(TOPIC, "system", SYSTEM_PAYLOAD, join_ref="6"))
    assert encoded == (
        '["6",null,"realtime:live:site-abc","system",{"channel":"live:site-abc",'
        '"extension":"postgres_changes","message":"Subscribed to PostgreSQL",'
        '"status":"ok"}]'
    )


def test_v1_system_push_matches_capture() -> None:
    captured = '{"event":"system","payload":{"channel":"live:site-abc","extension":"postgres_changes","message":"Subscribed to PostgreSQL","status":"ok"},"ref":null,"topic":"realtime:live:site-abc"}'  # noqa: E501
    encoded = V1.encode(push(TOPIC, "system", SYSTEM_PAYLOAD, join_ref="6"))
    assert orjson.loads(encoded) == orjson.loads(captured)


def test_v2_fanout_broadcast_matches_capture() -> None:
    encoded = V2.encode(push(TOPIC, BROADCAST, BROADCAST_PAYLOAD))
    assert encoded == (
        '[null,null,"realtime:live:site-abc","broadcast",'
        '{"event":"x","payload":{"from":"server","n":1},"type":"broadcast"}]'
    )


def test_heartbeat_replies_match_spec() -> None:
    assert V1.encode(reply(PHOENIX_TOPIC, "7", None, "ok", {})) == (
        '{"topic":"phoenix","event":"phx_reply",'
        '"payload":{"status":"ok","response":{}},"ref":"7"}'
    )
    assert V2.encode(reply(PHOENIX_TOPIC, "7", None, "ok", {})) == (
        '[null,"7","phoenix","phx_reply",{"status":"ok","response":{}}]'
    )


def test_python_heartbeat_reply_echoes_null_ref() -> None:
    encoded = orjson.loads(V1.encode(reply(PHOENIX_TOPIC, None, None, "ok", {})))
    assert encoded == {
        "topic": "phoenix",
        "event": "phx_reply",
        "payload": {"status": "ok", "response": {}},
        "ref": None,
    }


def test_leave_reply_and_close_match_spec() -> None:
    room = "realtime:room1"
    assert V2.encode(reply(room, "6", "1", "ok", {})) == (
        '["1","6","realtime:room1","phx_reply",{"status":"ok","response":{}}]'
    )
    assert V2.encode(close(room, "1")) == '["1","1","realtime:room1","phx_close",{}]'
    assert V1.encode(close(room, "1")) == (
        '{"topic":"realtime:room1","event":"phx_close","payload":{},"ref":"1"}'
    )


def test_error_frame_has_close_shape() -> None:
    msg = error_frame("realtime:room1", "1")
    assert (msg.event, msg.payload, msg.ref, msg.join_ref) == (PHX_ERROR, {}, "1", "1")
    assert V1.encode(msg) == (
        '{"topic":"realtime:room1","event":"phx_error","payload":{},"ref":"1"}'
    )


def test_close_for_python_client_has_null_ref() -> None:
    msg = close("realtime:room1", None)
    assert msg.event == PHX_CLOSE
    assert orjson.loads(V1.encode(msg))["ref"] is None


SERVER_MESSAGES = [
    reply(TOPIC, "1", "1", "ok", JOIN_OK),
    reply(TOPIC, "3", "1", "error", {"reason": "Unauthorized: nope"}),
    push(TOPIC, "system", SYSTEM_PAYLOAD, join_ref="1"),
    push(TOPIC, BROADCAST, BROADCAST_PAYLOAD),
    push(TOPIC, "presence_state", {}),
    close(TOPIC, "1"),
    close(TOPIC, None),
    error_frame(TOPIC, "1"),
]


@pytest.mark.parametrize("msg", SERVER_MESSAGES)
def test_v1_server_frames_never_carry_join_ref(msg: Message) -> None:
    frame = orjson.loads(V1.encode(msg))
    assert list(frame) == ["topic", "event", "payload", "ref"]
    assert frame["ref"] == msg.ref


@pytest.mark.parametrize("msg", SERVER_MESSAGES)
def test_v2_server_frames_are_five_element_arrays(msg: Message) -> None:
    frame = orjson.loads(V2.encode(msg))
    assert frame == [msg.join_ref, msg.ref, msg.topic, msg.event, msg.payload]


def test_pushes_carry_no_ref() -> None:
    msg = push(TOPIC, "postgres_changes", {"ids": [1], "data": {}}, join_ref="6")
    assert (msg.ref, msg.join_ref) == (None, "6")


@pytest.mark.parametrize("codec", [V1, V2], ids=["v1", "v2"])
@pytest.mark.parametrize("msg", SERVER_MESSAGES)
@pytest.mark.parametrize("as_bytes", [True, False], ids=["bytes", "str"])
def test_encode_raw_equals_encode(codec: Codec, msg: Message, as_bytes: bool) -> None:
    payload_json: bytes | str = orjson.dumps(msg.payload)
    if not as_bytes:
        payload_json = payload_json.decode()
    raw = codec.encode_raw(
        topic=msg.topic,
        event=msg.event,
        payload_json=payload_json,
        ref=msg.ref,
        join_ref=msg.join_ref,
    )
    assert raw == codec.encode(msg)
    assert orjson.loads(raw) == orjson.loads(codec.encode(msg))


@pytest.mark.parametrize("codec", [V1, V2], ids=["v1", "v2"])
def test_encode_raw_escapes_topic_and_refs(codec: Codec) -> None:
    msg = Message('realtime:"q"\\é\n', "broadcast", {"a": "ü"}, 'r"1', None)
    raw = codec.encode_raw(
        topic=msg.topic, event=msg.event, payload_json=b'{"a":"\xc3\xbc"}', ref=msg.ref
    )
    assert raw == codec.encode(msg)
    assert codec.decode_text(raw).topic == msg.topic


def test_v2_encodes_captured_kind4_frame() -> None:
    frame = V2.encode_user_broadcast(
        topic=TOPIC,
        event="x",
        payload=orjson.dumps({"from": "server-binary", "n": 2}),
        encoding=1,
    )
    assert frame == SERVER_KIND4


def test_v2_encodes_kind4_with_meta() -> None:
    meta = b'{"id":"0198f6a8-0000-7000-8000-000000000001"}'
    payload = b'{"from":"server-binary-meta","n":3}'
    frame = V2.encode_user_broadcast(
        topic=TOPIC, event="x", payload=payload, encoding=1, meta=meta
    )
    expected = bytes.fromhex("0416012d01") + TOPIC.encode() + b"x" + meta + payload
    assert frame == expected


def test_v2_encodes_raw_kind4() -> None:
    frame = V2.encode_user_broadcast(
        topic="t", event="bin", payload=b"\x00\xff", encoding=0
    )
    assert frame == b"\x04\x01\x03\x00\x00tbin\x00\xff"


@pytest.mark.parametrize(
    ("field", "value"),
    [("topic", "t" * 256), ("event", "é" * 128), ("meta", b"{" * 256)],
)
def test_kind4_fields_over_255_bytes_are_refused(field: str, value: Any) -> None:
    kwargs: dict[str, Any] = {"topic": "t", "event": "e", "payload": b"{}"}
    kwargs[field] = value
    with pytest.raises(ProtocolError) as info:
        V2.encode_user_broadcast(encoding=1, **kwargs)
    assert info.value.code == "bad_field"


def test_kind4_field_of_exactly_255_bytes_fits() -> None:
    frame = V2.encode_user_broadcast(
        topic="t" * 255, event="e", payload=b"{}", encoding=1
    )
    assert frame[1] == 255
    assert len(frame) == 5 + 255 + 1 + 2


def test_kind4_refuses_unknown_encoding() -> None:
    with pytest.raises(ProtocolError):
        V2.encode_user_broadcast(topic="t", event="e", payload=b"", encoding=2)


@pytest.mark.parametrize("codec", [V1, V2], ids=["v1", "v2"])
@pytest.mark.parametrize("payload", [None, [1], "s", b"\x01", {"b": b"\x01"}])
def test_encode_refuses_payloads_clients_cannot_read(
    codec: Codec, payload: Any
) -> None:
    with pytest.raises(ProtocolError) as info:
        codec.encode(Message(TOPIC, "broadcast", payload, None, None))
    assert info.value.code == "bad_payload"


# --- malformed input ------------------------------------------------------------------


def _code(call: Any, *args: Any) -> str:
    with pytest.raises(ProtocolError) as info:
        call(*args)
    return info.value.code


@pytest.mark.parametrize("codec", [V1, V2], ids=["v1", "v2"])
@pytest.mark.parametrize("text", ["", "{", "[null,", "nope", '{"a":1}x', "\ud800"])
def test_invalid_json_is_refused(codec: Codec, text: str) -> None:
    assert _code(codec.decode_text, text) == "invalid_json"


@pytest.mark.parametrize(
    "text",
    [
        '[null,"1","phoenix","heartbeat",{}]',
        '"phoenix"',
        "42",
        "null",
    ],
)
def test_v1_refuses_non_objects(text: str) -> None:
    assert _code(V1.decode_text, text) == "bad_shape"


@pytest.mark.parametrize("text", [JS_V1_HEARTBEAT, '"x"', "1", "null"])
def test_v2_refuses_non_arrays(text: str) -> None:
    assert _code(V2.decode_text, text) == "bad_shape"


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        '[null,"1","phoenix","heartbeat"]',
        '[null,"1","phoenix","heartbeat",{},"extra"]',
    ],
)
def test_v2_refuses_wrong_arity(text: str) -> None:
    assert _code(V2.decode_text, text) == "bad_arity"


@pytest.mark.parametrize(
    "text",
    [
        '{"event":"heartbeat","payload":{},"ref":null}',
        '{"topic":"phoenix","payload":{},"ref":null}',
        '{"topic":"phoenix","event":"heartbeat","ref":null}',
        '{"topic":"phoenix","event":"heartbeat","payload":{}}',
        '{"topic":1,"event":"heartbeat","payload":{},"ref":null}',
        '{"topic":null,"event":"heartbeat","payload":{},"ref":null}',
        '{"topic":"phoenix","event":["x"],"payload":{},"ref":null}',
        '{"topic":"phoenix","event":"heartbeat","payload":{},"ref":7}',
        '{"topic":"phoenix","event":"heartbeat","payload":{},"ref":null,"join_ref":1}',
    ],
)
def test_v1_refuses_missing_or_mistyped_fields(text: str) -> None:
    assert _code(V1.decode_text, text) == "bad_field"


@pytest.mark.parametrize(
    "text",
    [
        '[null,"1",1,"heartbeat",{}]',
        '[null,"1",null,"heartbeat",{}]',
        '[null,"1","phoenix",{},{}]',
        '[null,1,"phoenix","heartbeat",{}]',
        '[6,"1","phoenix","heartbeat",{}]',
    ],
)
def test_v2_refuses_mistyped_fields(text: str) -> None:
    assert _code(V2.decode_text, text) == "bad_field"


def test_payload_may_be_any_json_value() -> None:
    assert V2.decode_text('[null,"1","t","e",[1,2]]').payload == [1, 2]
    v1 = V1.decode_text('{"topic":"t","event":"e","payload":null,"ref":"1"}')
    assert v1.payload is None


def test_v1_refuses_binary_frames() -> None:
    assert _code(V1.decode_binary, JS_BINARY_BROADCAST) == "bad_binary"


@pytest.mark.parametrize("kind", [0, 1, 2, 4, 5, 255])
def test_unknown_binary_kinds_are_refused(kind: int) -> None:
    frame = bytes([kind]) + JS_BINARY_BROADCAST[1:]
    assert _code(V2.decode_binary, frame) == "unknown_kind"


def test_empty_binary_frame_is_refused() -> None:
    assert _code(V2.decode_binary, b"") == "bad_binary"


@pytest.mark.parametrize("size", range(1, 7))
def test_truncated_binary_header_is_refused(size: int) -> None:
    assert _code(V2.decode_binary, JS_BINARY_BROADCAST[:size]) == "bad_binary"


def test_every_truncation_of_the_capture_is_refused() -> None:
    for size in range(1, len(JS_BINARY_BROADCAST)):
        assert _code(V2.decode_binary, JS_BINARY_BROADCAST[:size]) == "bad_binary"


@pytest.mark.parametrize("index", [1, 2, 3, 4, 5])
def test_lying_binary_lengths_are_refused(index: int) -> None:
    # Raw encoding: without the length check an empty payload would decode.
    frame = bytearray(_kind3(payload=b"", encoding=0))
    frame[index] = 255
    with pytest.raises(ProtocolError) as info:
        V2.decode_binary(bytes(frame))
    assert info.value.code == "bad_binary"
    assert "exceed" in info.value.message


@pytest.mark.parametrize(
    "frame",
    [
        _kind3(join_ref=b"\xff"),
        _kind3(ref=b"\xc3"),
        _kind3(topic=b"realtime:\xfe"),
        _kind3(event=b"\x80x"),
    ],
)
def test_non_utf8_binary_fields_are_refused(frame: bytes) -> None:
    assert _code(V2.decode_binary, frame) == "bad_binary"


@pytest.mark.parametrize(
    "frame",
    [
        _kind3(payload=b""),
        _kind3(payload=b'{"x":'),
        _kind3(payload=b'{"x":1}garbage'),
        _kind3(payload=b'"\xff"'),
        _kind3(meta=b"{bad"),
        _kind3(meta=b"[1]"),
        _kind3(encoding=2),
    ],
)
def test_bad_binary_payloads_are_refused(frame: bytes) -> None:
    assert _code(V2.decode_binary, frame) == "bad_binary"


def test_random_binary_frames_never_escape_protocol_error() -> None:
    rng = random.Random(1234)
    # Mostly ASCII so that a good share decodes; a few bytes break UTF-8.
    alphabet = b"abcdefgh0123456789" * 3 + b"{}\x80\xc3\xff"
    outcomes = {"decoded": 0, "refused": 0}
    for _ in range(3000):
        header = [3, *(rng.randrange(0, 6) for _ in range(5)), rng.choice((0, 0, 1))]
        body = bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 50)))
        try:
            msg = V2.decode_binary(bytes(header) + body)
        except ProtocolError:
            outcomes["refused"] += 1
            continue
        outcomes["decoded"] += 1
        assert msg.event == BROADCAST
    assert outcomes["decoded"] > 100
    assert outcomes["refused"] > 100


def test_oversized_text_frames_are_refused() -> None:
    text = '[null,null,"t","e",{"k":"' + "a" * MAX_FRAME_BYTES + '"}]'
    assert _code(V2.decode_text, text) == "frame_too_large"


def test_oversized_multibyte_text_is_measured_in_bytes() -> None:
    # Fewer code points than the limit, but more UTF-8 bytes than it.
    body = "é" * (MAX_FRAME_BYTES // 2)
    text = '{"topic":"t","event":"e","payload":"' + body + '","ref":null}'
    assert len(text) < MAX_FRAME_BYTES
    assert _code(V1.decode_text, text) == "frame_too_large"


def test_text_frame_of_exactly_the_limit_is_accepted() -> None:
    shell = '[null,null,"t","e",{"k":""}]'
    text = shell[:-3] + "a" * (MAX_FRAME_BYTES - len(shell)) + shell[-3:]
    assert len(text.encode()) == MAX_FRAME_BYTES
    assert len(V2.decode_text(text).payload["k"]) == MAX_FRAME_BYTES - len(shell)


def test_oversized_binary_frames_are_refused() -> None:
    frame = _kind3(payload=b'"' + b"a" * MAX_FRAME_BYTES + b'"')
    assert _code(V2.decode_binary, frame) == "frame_too_large"


def test_protocol_error_str_is_its_message() -> None:
    with pytest.raises(ProtocolError) as info:
        V2.decode_text("[1]")
    assert str(info.value) == info.value.message
    assert "5 elements" in info.value.message


# --- vsn negotiation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vsn", "expected"),
    [
        (None, V1Codec),
        ("", V1Codec),
        ("1.0.0", V1Codec),
        ("1.0.7", V1Codec),
        ("1.0.1-rc.1", V1Codec),
        ("1.0.0+build.5", V1Codec),
        ("2.0.0", V2Codec),
        ("2.0.3", V2Codec),
    ],
)
def test_codec_for_supported_vsn(vsn: str | None, expected: type) -> None:
    codec = codec_for_vsn(vsn)
    assert type(codec) is expected
    assert codec is not None and codec.vsn == (
        "1.0.0" if expected is V1Codec else "2.0.0"
    )


@pytest.mark.parametrize(
    "vsn",
    [
        "1.1.0",
        "1.2.3",
        "2.1.0",
        "3.0.0",
        "0.9.0",
        "1.0",
        "2",
        "1.0.0-rc.1",
        "01.0.0",
        "1.0.0 ",
        "v1.0.0",
        "garbage",
    ],
)
def test_codec_for_unsupported_vsn_is_none(vsn: str) -> None:
    assert codec_for_vsn(vsn) is None


def test_only_v2_supports_binary() -> None:
    assert (V1.supports_binary, V2.supports_binary) == (False, True)


def test_reply_payload_shape() -> None:
    msg = reply(TOPIC, "5", "1", "error", {"reason": "unmatched topic"})
    assert msg.event == PHX_REPLY
    assert msg.payload == {"status": "error", "response": {"reason": "unmatched topic"}}
