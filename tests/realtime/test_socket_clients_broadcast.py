"""Broadcast, presence and private channels end to end: the official clients.

Real client processes (tests/realtime_clients.py) against real daphne
processes on PostgreSQL and Redis. What is asserted is what an application's
callbacks and promises get; tests/realtime/test_broadcast.py,
test_presence.py and test_private_channels.py check the frames themselves.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from realtime.auth import token_mint
from realtime.presence import LEAVE_BOUND
from realtime.services.policies import channel_policy_add
from realtime.services.tenants import TenantCredentials
from tests.realtime_clients import ClientFactory, ClientProcess, client_factory

pytestmark = pytest.mark.django_db(transaction=True)

# realtime-js-v2 is what supabase-js speaks too; v1 is older realtime-js.
KINDS = ["python", "realtime-js-v2", "realtime-js-v1", "supabase-js"]
EVENT = "msg"
# Time for a message that was not going to come to show up anyway, where no
# later message on the same path can stand for it.
QUIET = 0.5

Event = dict[str, Any]


@pytest.fixture
def clients() -> Iterator[ClientFactory]:
    with client_factory() as open_client:
        yield open_client


@pytest.fixture(scope="module")
def second_server(start_server: Any) -> Any:
    """Another Herald process on the same PostgreSQL and Redis."""
    return start_server()


# --- Driving ------------------------------------------------------------------------

_ids = itertools.count(1)


def call(client: ClientProcess, cmd: str, **fields: Any) -> Any:
    """Run one driver command and return what it resolved to."""
    ident = f"{cmd}-{next(_ids)}"
    since = client.mark()
    client.send(cmd, id=ident, **fields)
    done = client.wait_for(
        lambda e: e["event"] in {"done", "error"} and e.get("id") == ident,
        since=since,
    )
    if done["event"] == "error":
        pytest.fail(f"{client.kind}: {cmd} failed: {done}\n{client.describe()}")
    return done["result"]


def is_js(client: ClientProcess) -> bool:
    return client.kind != "python"


def join(
    client: ClientProcess,
    topic: str,
    config: dict[str, Any],
    *,
    presence: bool = False,
    expect: str = "SUBSCRIBED",
) -> Event:
    """Listen for EVENT broadcasts (and presence), then subscribe."""
    call(client, "on_broadcast", topic=topic, event=EVENT, config=config)
    if presence:
        for kind in ("sync", "join", "leave"):
            call(client, "on_presence", topic=topic, event=kind, config=config)
    return client.subscribe(topic, [], config=config, expect=expect)


def assert_no_client_trouble(client: ClientProcess) -> None:
    """The library neither threw nor dropped a frame it could not parse."""
    client.assert_no(lambda e: e["event"] in {"exception", "error"})
    client.assert_no(
        lambda e: e["event"] == "log" and "Unrecognized message" in e.get("msg", "")
    )


# --- Broadcasts received --------------------------------------------------------------


def broadcast_from(topic: str, sender: str) -> Callable[[Event], bool]:
    """A broadcast callback on `topic` for a message whose payload names `sender`."""
    return lambda e: (
        e["event"] == "broadcast"
        and e["topic"] == topic
        and e["payload"]["payload"].get("from") == sender
    )


def any_broadcast(topic: str) -> Callable[[Event], bool]:
    return lambda e: e["event"] == "broadcast" and e["topic"] == topic


def expected_broadcast(client: ClientProcess, body: dict[str, Any]) -> dict:
    """What the callback gets for an EVENT broadcast of `body`."""
    if is_js(client):
        return {"type": "broadcast", "event": EVENT, "payload": body}
    return {"event": EVENT, "payload": body}  # Python drops `type`


def receive(
    client: ClientProcess, topic: str, body: dict[str, Any], *, stored: bool = False
) -> None:
    """`stored`: a private topic's broadcast, stored for replay, whose id the
    JS clients hand over as `meta.id` (README, Broadcast replay)."""
    got = client.wait_for(broadcast_from(topic, body["from"]))
    payload = dict(got["payload"])
    if stored:
        meta = payload.pop("meta", None)
        if is_js(client):
            assert isinstance(meta, dict) and str(meta.get("id")).isdigit(), got
    assert payload == expected_broadcast(client, body), got


# --- What went over the wire --------------------------------------------------------


def binary_pushes(client: ClientProcess) -> list[dict[str, Any]]:
    """The binary frames the JS client wrote, decoded as kind 3.

    See docs/protocol.md §2.
    """
    pushes = []
    for event in client.matching(lambda e: e["event"] == "sent"):
        frame = bytes.fromhex(event["hex"])
        lengths, fields, at = frame[1:6], [], 7
        for length in lengths:
            fields.append(frame[at : at + length].decode())
            at += length
        join_ref, ref, topic, user_event, meta = fields
        pushes.append(
            {
                "kind": frame[0],
                "encoding": frame[6],
                "join_ref": join_ref,
                "ref": ref,
                "topic": topic,
                "event": user_event,
                "meta": meta,
                "payload": json.loads(frame[at:]),
            }
        )
    return pushes


def replies_other_than_joins(client: ClientProcess, topic: str) -> list[dict]:
    """phx_reply payloads on `topic` that answer something other than a join."""
    full = f"realtime:{topic}"
    if is_js(client):
        replies = [
            e["data"]
            for e in client.matching(
                lambda e: (
                    e["event"] == "log"
                    and e["kind"] == "receive"
                    and f" {full} phx_reply" in e["msg"]
                )
            )
        ]
    else:
        frames = [
            json.loads(e["raw"])
            for e in client.matching(
                lambda e: e["event"] == "frame" and isinstance(e["raw"], str)
            )
        ]
        replies = [
            f["payload"]
            for f in frames
            if f["event"] == "phx_reply" and f["topic"] == full
        ]
    return [r for r in replies if "postgres_changes" not in (r.get("response") or {})]


# --- Broadcast between every pair of clients ------------------------------------------

COMBOS = [(False, False), (True, False), (False, True), (True, True)]


def test_broadcast_between_all_clients_with_and_without_self_and_ack(
    clients: ClientFactory, herald_server: Any, tenant: TenantCredentials
) -> None:
    mesh = [clients(k, herald_server, apikey=tenant.publishable_key) for k in KINDS]
    topics = {}
    for self_, ack in COMBOS:
        topic = f"mesh-self-{str(self_).lower()}-ack-{str(ack).lower()}"
        topics[topic] = (self_, ack)
        for client in mesh:
            join(client, topic, {"broadcast": {"self": self_, "ack": ack}})

    for topic, (self_, ack) in topics.items():
        # One sender at a time: everyone else has it before the next one sends.
        for sender in mesh:
            body = {"from": sender.kind, "topic": topic, "n": [1, {"deep": None}]}
            # JS resolves 'ok' at once without ack, on the server's ok with it.
            result = call(sender, "send", topic=topic, event=EVENT, payload=body)
            assert result == ("ok" if is_js(sender) else None), (topic, sender.kind)
            for receiver in mesh:
                if receiver is not sender or self_:
                    receive(receiver, topic, body)
        # The marker: the first sender again. Each client has every message it
        # would ever get before this one, its own included.
        marker = {"from": "marker", "topic": topic}
        call(mesh[0], "send", topic=topic, event=EVENT, payload=marker)
        for receiver in mesh[1:] if not self_ else mesh:
            receive(receiver, topic, marker)
        for client in mesh:
            own = client.matching(broadcast_from(topic, client.kind))
            assert len(own) == (1 if self_ else 0), (topic, client.kind, own)
            gets_marker = client is not mesh[0] or self_
            expected = len(mesh) - 1 + int(self_) + int(gets_marker)
            got = client.matching(any_broadcast(topic))
            assert len(got) == expected, (topic, client.kind, got)
            # Python does not wait for its acks: they may still be on the way.
            sent = 2 if client is mesh[0] else 1
            expected_acks = [{"status": "ok", "response": {}}] * sent if ack else []
            deadline = time.monotonic() + 5
            while (
                len(acks := replies_other_than_joins(client, topic))
                < len(expected_acks)
                and time.monotonic() < deadline
            ):
                time.sleep(0.05)
            assert acks == expected_acks, (topic, client.kind)

    # realtime-js over vsn 2.0.0 sent each broadcast as a binary kind 3 frame.
    for client in mesh:
        pushes = binary_pushes(client)
        if client.kind in {"realtime-js-v2", "supabase-js"}:
            assert {p["topic"] for p in pushes} == {f"realtime:{t}" for t in topics}
            for push in pushes:
                assert (push["kind"], push["encoding"], push["meta"]) == (3, 1, "")
                assert push["event"] == EVENT
                assert push["payload"]["from"] in {client.kind, "marker"}
        else:
            assert pushes == []
        assert_no_client_trouble(client)


# --- Presence -------------------------------------------------------------------------


def presence_config(key: str) -> dict[str, Any]:
    return {"presence": {"key": key, "enabled": True}}


def presence_change(event: Event) -> tuple[str, list[dict], list[dict]]:
    """(key, current presences, joined or left presences) of a join/leave callback."""
    if isinstance(event["payload"], list):  # Python: the callback's arguments
        key, current, changed = event["payload"]
        return key, current, changed
    payload = event["payload"]
    changed = payload.get("newPresences", payload.get("leftPresences"))
    return payload["key"], payload["currentPresences"], changed


def presence(kind: str, topic: str, key: str, **meta: Any) -> Callable[[Event], bool]:
    """A join or leave callback for `key` whose presences carry `meta`."""

    def match(e: Event) -> bool:
        if e["event"] != "presence" or e["kind"] != kind or e["topic"] != topic:
            return False
        got_key, _, changed = presence_change(e)
        return got_key == key and any(
            all(p.get(k) == v for k, v in meta.items()) for p in changed
        )

    return match


def only_presence(event: Event, **meta: Any) -> dict[str, Any]:
    """The single joined/left presence: the meta plus a presence_ref, nothing else."""
    _, _, changed = presence_change(event)
    assert len(changed) == 1, event
    [got] = changed
    assert isinstance(got.get("presence_ref"), str) and got["presence_ref"], event
    assert got == {"presence_ref": got["presence_ref"], **meta}, event
    return got


def state_metas(event: Event) -> dict[str, list[dict]]:
    """presenceState() / presence_state() at a callback, refs left out."""
    return {
        key: [{k: v for k, v in p.items() if k != "presence_ref"} for p in presences]
        for key, presences in event["state"].items()
    }


def synced(topic: str, expected: dict[str, list[dict]]) -> Callable[[Event], bool]:
    return lambda e: (
        e["event"] == "presence"
        and e["kind"] == "sync"
        and e["topic"] == topic
        and state_metas(e) == expected
    )


def test_presence_join_update_and_leave_between_all_clients(
    clients: ClientFactory, herald_server: Any, tenant: TenantCredentials
) -> None:
    topic = "lobby"
    mesh = [clients(k, herald_server, apikey=tenant.publishable_key) for k in KINDS]
    for client in mesh:
        join(client, topic, presence_config(client.kind), presence=True)

    # Join: each one tracks; everyone, itself included, sees the join.
    refs: dict[str, str] = {}
    for tracker in mesh:
        meta = {"name": tracker.kind, "n": 1}
        result = call(tracker, "track", topic=topic, payload=meta)
        assert result == ("ok" if is_js(tracker) else None)
        seen = [
            only_presence(
                c.wait_for(presence("join", topic, tracker.kind, n=1)), **meta
            )
            for c in mesh
        ]
        assert len({p["presence_ref"] for p in seen}) == 1, seen
        refs[tracker.kind] = seen[0]["presence_ref"]
    everyone = {c.kind: [{"name": c.kind, "n": 1}] for c in mesh}
    for client in mesh:
        state = client.wait_for(synced(topic, everyone))["state"]
        assert {k: [p["presence_ref"] for p in v] for k, v in state.items()} == {
            k: [ref] for k, ref in refs.items()
        }

    # Update: a new payload is a join of the new meta and a leave of the old.
    for tracker in mesh:
        meta = {"name": tracker.kind, "n": 2}
        call(tracker, "track", topic=topic, payload=meta)
        for client in mesh:
            joined = client.wait_for(presence("join", topic, tracker.kind, n=2))
            new = only_presence(joined, **meta)
            assert new["presence_ref"] != refs[tracker.kind]
            left = client.wait_for(presence("leave", topic, tracker.kind, n=1))
            old = only_presence(left, name=tracker.kind, n=1)
            assert old["presence_ref"] == refs[tracker.kind]
            assert presence_change(left)[1] == [new], left  # what is left: the new
        refs[tracker.kind] = new["presence_ref"]
    everyone = {c.kind: [{"name": c.kind, "n": 2}] for c in mesh}
    for client in mesh:
        client.wait_for(synced(topic, everyone))

    # Leave: Python untracks, realtime-js v1 unsubscribes, supabase-js's
    # socket closes. What is left is realtime-js v2 alone.
    python, js_v2, js_v1, supabase = mesh
    call(python, "untrack", topic=topic)
    call(js_v1, "unsubscribe", topic=topic)
    supabase.close()
    for watcher in (python, js_v2):
        for leaver in (python, js_v1, supabase):
            left = watcher.wait_for(presence("leave", topic, leaver.kind, n=2))
            gone = only_presence(left, name=leaver.kind, n=2)
            assert gone["presence_ref"] == refs[leaver.kind]
    alone = {"realtime-js-v2": [{"name": "realtime-js-v2", "n": 2}]}
    for client in (python, js_v2):
        client.wait_for(synced(topic, alone))
        assert_no_client_trouble(client)


def test_a_killed_server_process_presences_leave_within_the_bound(
    clients: ClientFactory,
    herald_server: Any,
    start_server: Any,
    tenant: TenantCredentials,
) -> None:
    topic = "lobby"
    doomed = start_server()
    key = tenant.publishable_key
    watchers = [
        clients(k, herald_server, apikey=key) for k in ("python", "realtime-js")
    ]
    ghosts = [clients(k, doomed, apikey=key) for k in ("supabase-js", "python")]
    for client in watchers:
        join(client, topic, presence_config(f"watcher-{client.kind}"), presence=True)
    for ghost in ghosts:
        join(ghost, topic, presence_config(f"ghost-{ghost.kind}"), presence=True)
        call(ghost, "track", topic=topic, payload={"ghost": ghost.kind})
        for watcher in watchers:
            watcher.wait_for(presence("join", topic, f"ghost-{ghost.kind}"))
    marks = [w.mark() for w in watchers]

    doomed.kill()
    killed = time.monotonic()
    # A correctness bound: the liveness TTL plus one sweep, and some slack.
    bound = LEAVE_BOUND + 5
    for watcher, mark in zip(watchers, marks, strict=True):
        for ghost in ghosts:
            left_in = bound - (time.monotonic() - killed)
            left = watcher.wait_for(
                presence("leave", topic, f"ghost-{ghost.kind}"),
                timeout=max(left_in, 0.1),
                since=mark,
            )
            only_presence(left, ghost=ghost.kind)
        # Then presenceState() is empty again.
        watcher.wait_for(synced(topic, {}), since=mark)
        assert_no_client_trouble(watcher)


# --- Across server processes --------------------------------------------------------


def test_broadcast_and_presence_cross_server_processes(
    clients: ClientFactory,
    herald_server: Any,
    second_server: Any,
    tenant: TenantCredentials,
) -> None:
    topic = "across"
    key = tenant.publishable_key
    placed = [
        ("python", herald_server),
        ("realtime-js-v2", second_server),
        ("supabase-js", herald_server),
        ("realtime-js-v1", second_server),
    ]
    mesh = [clients(kind, server, apikey=key) for kind, server in placed]
    for client in mesh:
        config = {"broadcast": {"ack": True}, **presence_config(client.kind)}
        join(client, topic, config, presence=True)

    for sender in mesh:
        body = {"from": sender.kind}
        assert call(sender, "send", topic=topic, event=EVENT, payload=body) == (
            "ok" if is_js(sender) else None
        )
        for receiver in mesh:
            if receiver is not sender:
                receive(receiver, topic, body)

    for tracker in mesh:
        call(tracker, "track", topic=topic, payload={"at": tracker.kind})
        seen = [
            c.wait_for(presence("join", topic, tracker.kind, at=tracker.kind))
            for c in mesh
        ]
        refs = {only_presence(e, at=tracker.kind)["presence_ref"] for e in seen}
        assert len(refs) == 1, seen
    everyone = {c.kind: [{"at": c.kind}] for c in mesh}
    for client in mesh:
        client.wait_for(synced(topic, everyone))

    # A leave on one process reaches the other.
    python, js_v2 = mesh[:2]
    call(js_v2, "untrack", topic=topic)
    python.wait_for(presence("leave", topic, js_v2.kind, at=js_v2.kind))
    call(python, "untrack", topic=topic)
    js_v2.wait_for(presence("leave", topic, python.kind, at=python.kind))
    for client in mesh:
        assert_no_client_trouble(client)


# --- Private channels -----------------------------------------------------------------

UNAUTHORIZED_READ = (
    "Unauthorized: You do not have permissions to read from this Channel topic: "
)


def site_user(creds: TenantCredentials, site_id: int) -> str:
    return token_mint(
        tenant=creds.tenant,
        role="authenticated",
        sub=f"user-{site_id}",
        claims={"site_id": site_id},
        ttl=600,
    )


def private(key: str) -> dict[str, Any]:
    return {
        "private": True,
        "broadcast": {"self": True, "ack": True},
        **presence_config(key),
    }


@pytest.mark.parametrize("kind", KINDS)
def test_private_channel_rights(
    kind: str, clients: ClientFactory, herald_server: Any, make_tenant: Any
) -> None:
    """`kind` plays the principals without a right; a service client writes."""
    a, b = make_tenant("Tenant A"), make_tenant("Tenant B")
    channel_policy_add(
        tenant=a.tenant, pattern="site:{site_id}", role="authenticated", read=True
    )
    channel_policy_add(tenant=b.tenant, pattern="*", read=True, write=True)
    topic = "site:1"
    writer = clients("realtime-js-v2", herald_server, apikey=a.secret_key)
    stranger = clients(
        kind, herald_server, apikey=a.publishable_key, token=site_user(a, 2)
    )
    reader = clients(
        kind, herald_server, apikey=a.publishable_key, token=site_user(a, 1)
    )
    outsider = clients(
        kind, herald_server, apikey=b.publishable_key, token=site_user(b, 1)
    )

    # Without the read policy: no join, with Supabase's reason.
    refused = join(stranger, topic, private("stranger"), expect="CHANNEL_ERROR")
    assert UNAUTHORIZED_READ + topic in refused["error"], refused

    join(writer, topic, private("writer"), presence=True)
    join(reader, topic, private("reader"), presence=True)
    join(outsider, topic, private("outsider"), presence=True)  # B's own site:1

    # Read without write: the broadcast is refused, nobody gets it.
    sent = call(reader, "send", topic=topic, event=EVENT, payload={"from": "reader"})
    tracked = call(reader, "track", topic=topic, payload={"who": "reader"})
    if is_js(reader):
        assert (sent, tracked) == ("error", "error")

    # What the writer sends after those is the marker: the reader and the
    # writer (self) would have had the reader's messages before it.
    call(writer, "send", topic=topic, event=EVENT, payload={"from": "writer"})
    call(writer, "track", topic=topic, payload={"who": "writer"})
    for client in (writer, reader):
        receive(client, topic, {"from": "writer"}, stored=True)
        client.wait_for(presence("join", topic, "writer", who="writer"))
        client.assert_no(broadcast_from(topic, "reader"))
        client.assert_no(presence("join", topic, "reader"))

    # Another tenant's principal on its own topic of the same name: nothing
    # from tenant A, and tenant A nothing from it.
    call(outsider, "send", topic=topic, event=EVENT, payload={"from": "outsider"})
    call(outsider, "track", topic=topic, payload={"who": "outsider"})
    receive(outsider, topic, {"from": "outsider"}, stored=True)
    outsider.wait_for(presence("join", topic, "outsider", who="outsider"))
    outsider.assert_no(broadcast_from(topic, "writer"), wait=QUIET)
    outsider.assert_no(presence("join", topic, "writer"))
    for client in (writer, reader):
        client.assert_no(broadcast_from(topic, "outsider"))
        client.assert_no(presence("join", topic, "outsider"))
    for client in (writer, reader, outsider):
        assert_no_client_trouble(client)


# --- REST broadcast -------------------------------------------------------------------


def test_send_before_joining_and_http_send_go_over_rest(
    clients: ClientFactory, herald_server: Any, tenant: TenantCredentials
) -> None:
    topic = "rest"
    key = tenant.publishable_key
    python, js_v1 = (
        clients(k, herald_server, apikey=key) for k in ("python", "realtime-js-v1")
    )
    js_v2, supabase = (
        clients(k, herald_server, apikey=key) for k in ("realtime-js-v2", "supabase-js")
    )
    receivers = (python, js_v1)
    for client in receivers:
        join(client, topic, {})

    # A channel that was never subscribed: send() falls back to
    # POST /realtime/v1/api/broadcast (docs/protocol.md §7) and resolves 'ok' on 202.
    for sender in (js_v2, supabase):
        call(sender, "on_broadcast", topic=topic, event=EVENT)
        body = {"from": f"{sender.kind} send"}
        assert call(sender, "send", topic=topic, event=EVENT, payload=body) == "ok"
        sender.wait_for(
            lambda e: e["event"] == "log" and "falling back to REST" in e["msg"]
        )
        for receiver in receivers:
            receive(receiver, topic, body)

    # httpSend: POST /realtime/v1/api/broadcast/<topic>/events/<event>, joined
    # or not; it reaches the sender's own joined channel too.
    for sender in (js_v2, supabase, python, js_v1):
        body = {"from": f"{sender.kind} httpSend"}
        result = call(sender, "http_send", topic=topic, event=EVENT, payload=body)
        assert result == ({"success": True} if is_js(sender) else None)
        for receiver in receivers:
            receive(receiver, topic, body)
    for client in (python, js_v1, js_v2, supabase):
        assert_no_client_trouble(client)
