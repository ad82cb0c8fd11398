"""Broadcast between sockets and from REST, across processes, frame by frame."""

import httpx
import orjson
import pytest

from realtime.protocol import V2

pytestmark = pytest.mark.django_db(transaction=True)


def is_broadcast(frame):
    return frame["event"] == "broadcast"


def kind3(topic, event, payload: bytes, *, join_ref="1", ref="9", encoding=1):
    """What realtime-js v2 sends for channel.send() (docs/protocol.md §2)."""
    fields = [join_ref.encode(), ref.encode(), topic.encode(), event.encode(), b""]
    return bytes([3, *(len(f) for f in fields), encoding]) + b"".join(fields) + payload


def send_broadcast(ws, topic, event, payload):
    body = {"type": "broadcast", "event": event, "payload": payload}
    return ws.push(f"realtime:{topic}", "broadcast", body, join_ref=ws.join_ref)


def test_broadcast_reaches_other_members_not_the_sender_by_default(tenant, sockets):
    sender, v1, v2 = (
        sockets(tenant.publishable_key, vsn=v) for v in ("1.0.0", "1.0.0", "2.0.0")
    )
    for ws in (sender, v1, v2):
        ws.join("room")
    send_broadcast(sender, "room", "cursor", {"x": 1})
    got = v1.recv_until(is_broadcast)
    assert got["raw"] == {
        "topic": "realtime:room",
        "event": "broadcast",
        "ref": None,
        "payload": {"type": "broadcast", "event": "cursor", "payload": {"x": 1}},
    }
    assert v2.recv_until(is_broadcast)["raw"] == [
        None,
        None,
        "realtime:room",
        "broadcast",
        {"type": "broadcast", "event": "cursor", "payload": {"x": 1}},
    ]
    assert sender.quiet(is_broadcast)


def test_self_and_ack(tenant, sockets):
    ws = sockets(tenant.publishable_key)
    ws.join("room", broadcast={"self": True, "ack": True})
    ref = send_broadcast(ws, "room", "ping", {"n": 1})
    # The ack and the broadcast travel different ways (the broadcast through
    # the layer): either may come first, so both are awaited together.
    ack = echo = None
    while ack is None or echo is None:
        frame = ws.recv()
        if frame["event"] == "phx_reply" and frame["ref"] == ref:
            ack = frame["payload"]
        elif is_broadcast(frame):
            echo = frame["payload"]["payload"]
    assert (ack, echo) == ({"status": "ok", "response": {}}, {"n": 1})


def test_without_ack_there_is_no_reply(tenant, sockets):
    ws = sockets(tenant.publishable_key)
    ws.join("room")
    send_broadcast(ws, "room", "ping", {"n": 1})
    assert ws.quiet(lambda f: f["event"] == "phx_reply")


def test_binary_push_from_a_v2_client_reaches_v1_and_v2_members(tenant, sockets):
    sender, v1, v2 = (
        sockets(tenant.publishable_key, vsn=v) for v in ("2.0.0", "1.0.0", "2.0.0")
    )
    for ws in (sender, v1, v2):
        ws.join("room")
    sender.send_binary(
        kind3("realtime:room", "x", b'{"from":"js"}', join_ref=sender.join_ref)
    )
    for ws in (v1, v2):
        payload = ws.recv_until(is_broadcast)["payload"]
        assert payload == {"type": "broadcast", "event": "x", "payload": {"from": "js"}}


def test_raw_binary_payload_reaches_only_v2_members_as_kind_4(tenant, sockets):
    sender, v1, v2 = (
        sockets(tenant.publishable_key, vsn=v) for v in ("2.0.0", "1.0.0", "2.0.0")
    )
    for ws in (sender, v1, v2):
        ws.join("room")
    sender.send_binary(
        kind3(
            "realtime:room",
            "bin",
            b"\x01\x02\x03",
            encoding=0,
            join_ref=sender.join_ref,
        )
    )
    frame = v2.recv_until(lambda f: f["event"] == "binary")["bytes"]
    assert frame == V2.encode_user_broadcast(
        topic="realtime:room", event="bin", payload=b"\x01\x02\x03", encoding=0
    )
    assert v1.quiet(lambda f: True)


def test_broadcast_crosses_processes(tenant, sockets, start_server):
    other = start_server()
    here, there = (
        sockets(tenant.publishable_key),
        sockets(tenant.publishable_key, server=other),
    )
    here.join("room")
    there.join("room")
    send_broadcast(here, "room", "hello", {"from": "here"})
    assert there.recv_until(is_broadcast)["payload"]["payload"] == {"from": "here"}


def test_topics_and_tenants_are_separate(make_tenant, sockets):
    a, b = make_tenant("A"), make_tenant("B")
    sender, other_topic, other_tenant = (
        sockets(a.publishable_key),
        sockets(a.publishable_key),
        sockets(b.publishable_key),
    )
    sender.join("room")
    other_topic.join("room-2")
    other_tenant.join("room")
    send_broadcast(sender, "room", "x", {})
    assert other_topic.quiet(is_broadcast) and other_tenant.quiet(is_broadcast)


def test_rest_batch_broadcast(herald_server, tenant, sockets):
    ws = sockets(tenant.publishable_key, vsn="2.0.0")
    ws.join("room")
    response = httpx.post(
        f"{herald_server.url}/realtime/v1/api/broadcast?apikey={tenant.secret_key}&vsn=2.0.0",
        json={
            "messages": [
                {"topic": "room", "event": "news", "payload": {"n": 1}, "id": "m-1"}
            ]
        },
    )
    assert (response.status_code, response.content) == (202, b"")
    assert ws.recv_until(is_broadcast)["payload"] == {
        "type": "broadcast",
        "event": "news",
        "payload": {"n": 1},
        "meta": {"id": "m-1"},
    }


def test_rest_single_broadcast_json_and_binary(herald_server, tenant, sockets):
    v1, v2 = (
        sockets(tenant.publishable_key),
        sockets(tenant.publishable_key, vsn="2.0.0"),
    )
    v1.join("room 1")
    v2.join("room 1")
    url = f"{herald_server.url}/realtime/v1/api/broadcast/room%201/events/tick"
    headers = {"apikey": tenant.secret_key}
    assert httpx.post(url, headers=headers, json={"t": 1}).status_code == 202
    assert v1.recv_until(is_broadcast)["payload"]["payload"] == {"t": 1}
    assert v2.recv_until(is_broadcast)["payload"]["event"] == "tick"
    binary = httpx.post(
        url,
        headers={**headers, "Content-Type": "application/octet-stream"},
        content=b"\x00\xff",
    )
    assert binary.status_code == 202
    frame = v2.recv_until(lambda f: f["event"] == "binary")["bytes"]
    assert frame.endswith(b"tick\x00\xff")
    assert v1.quiet(lambda f: True)


def test_oversized_broadcast_is_refused_and_others_unaffected(tenant, sockets):
    tenant.tenant.max_payload_size_kb = 1
    tenant.tenant.save()
    sender, other = sockets(tenant.publishable_key), sockets(tenant.publishable_key)
    sender.join("room", broadcast={"ack": True})
    other.join("room")
    ref = send_broadcast(sender, "room", "big", {"blob": "x" * 2000})
    assert sender.reply_to(ref)["payload"] == {
        "status": "error",
        "response": "payload_size_exceeded",
    }
    assert other.quiet(is_broadcast)
    send_broadcast(sender, "room", "small", {"ok": True})
    assert other.recv_until(is_broadcast)["payload"]["event"] == "small"


def test_rest_broadcast_refuses_oversized_and_malformed(herald_server, tenant):
    tenant.tenant.max_payload_size_kb = 1
    tenant.tenant.save()
    url = f"{herald_server.url}/realtime/v1/api/broadcast"
    headers = {"apikey": tenant.secret_key}
    big = httpx.post(
        url,
        headers=headers,
        json={"messages": [{"topic": "r", "event": "e", "payload": {"b": "x" * 2000}}]},
    )
    assert big.status_code == 413 and big.json()["error"] == "payload_too_large"
    missing = httpx.post(url, headers=headers, json={"messages": [{"topic": "r"}]})
    assert missing.status_code == 400 and "event" in missing.json()["message"]
    assert httpx.post(url, json={"messages": []}).status_code == 401


def test_one_size_limit_for_socket_and_rest(herald_server, tenant, sockets):
    """The payload fits the limit alone, not with its event: refused both ways."""
    tenant.tenant.max_payload_size_kb = 1  # 1,000 bytes + 500 of envelope slack
    tenant.tenant.save()
    event, payload = "e" * 200, {"b": "x" * 1482}
    assert len(orjson.dumps(payload)) == 1490
    sender = sockets(tenant.publishable_key)
    sender.join("room", broadcast={"ack": True})
    ref = send_broadcast(sender, "room", event, payload)
    assert sender.reply_to(ref)["payload"]["response"] == "payload_size_exceeded"
    rest = httpx.post(
        f"{herald_server.url}/realtime/v1/api/broadcast",
        headers={"apikey": tenant.secret_key},
        json={"messages": [{"topic": "room", "event": event, "payload": payload}]},
    )
    assert rest.status_code == 413, rest.content


def test_lying_binary_frame_gets_an_error_and_the_socket_lives(tenant, sockets):
    ws, other = (
        sockets(tenant.publishable_key, vsn="2.0.0"),
        sockets(tenant.publishable_key),
    )
    ws.join("room", broadcast={"self": True})
    other.join("room")
    ws.send_binary(bytes([3, 1, 1, 200, 1, 0, 1]) + b"11realtime:room")
    error = ws.recv_until(lambda f: f["event"] == "phx_reply")
    assert error["topic"] == "phoenix" and error["payload"]["status"] == "error"
    assert error["payload"]["response"]["reason"].startswith("MalformedFrame")
    send_broadcast(ws, "room", "after", {"ok": 1})
    assert other.recv_until(is_broadcast)["payload"]["event"] == "after"
    assert (
        orjson.loads(orjson.dumps(ws.recv_until(is_broadcast)["payload"]))["event"]
        == "after"
    )
