"""Presence: state on join, diffs on track, update and leave, across processes."""

import uuid

import pytest

from realtime.presence import LEAVE_BOUND

pytestmark = pytest.mark.django_db(transaction=True)

PRESENCE = {"presence": {"enabled": True}}


def event(name):
    return lambda frame: frame["event"] == name


def track(ws, topic, meta):
    body = {"type": "presence", "event": "track", "payload": meta}
    return ws.reply_to(
        ws.push(f"realtime:{topic}", "presence", body, join_ref=ws.join_ref)
    )


def metas(state, key):
    return state[key]["metas"]


def test_state_on_join_then_join_update_and_leave_diffs(tenant, sockets):
    watcher, walker = (
        sockets(tenant.publishable_key, vsn="2.0.0"),
        sockets(tenant.publishable_key),
    )
    watcher.join("room", **PRESENCE)
    state = watcher.recv_until(event("presence_state"))
    assert state["payload"] == {} and state["join_ref"] == watcher.join_ref
    walker.join("room", presence={"enabled": True, "key": "user-42"})
    assert walker.recv_until(event("presence_state"))["payload"] == {}

    assert track(walker, "room", {"online_at": 1})["payload"] == {
        "status": "ok",
        "response": {},
    }
    joined = watcher.recv_until(event("presence_diff"))
    assert joined["raw"][:2] == [None, None] and joined["payload"]["leaves"] == {}
    [meta] = metas(joined["payload"]["joins"], "user-42")
    assert meta["online_at"] == 1 and meta["phx_ref"]
    # The tracker hears its own join too.
    assert walker.recv_until(event("presence_diff"))["payload"]["joins"]["user-42"]

    track(walker, "room", {"online_at": 2})
    update = watcher.recv_until(event("presence_diff"))["payload"]
    [new] = metas(update["joins"], "user-42")
    [old] = metas(update["leaves"], "user-42")
    assert (new["online_at"], old["online_at"]) == (2, 1)
    assert new["phx_ref_prev"] == old["phx_ref"] == meta["phx_ref"]
    assert new["phx_ref"] != meta["phx_ref"]

    late = sockets(tenant.publishable_key)
    late.join("room", **PRESENCE)
    [current] = metas(late.recv_until(event("presence_state"))["payload"], "user-42")
    assert current["online_at"] == 2 and current["phx_ref"] == new["phx_ref"]

    walker.close()
    leave = watcher.recv_until(event("presence_diff"))["payload"]
    assert (
        leave["joins"] == {} and metas(leave["leaves"], "user-42")[0]["online_at"] == 2
    )


def test_the_tracker_gets_its_reply_before_the_diff_it_is_in(tenant, sockets):
    ws = sockets(tenant.publishable_key)
    ws.join("room", presence={"enabled": True, "key": "me"})
    ws.recv_until(event("presence_state"))
    for n in range(5):
        body = {"type": "presence", "event": "track", "payload": {"n": n}}
        ref = ws.push("realtime:room", "presence", body, join_ref=ws.join_ref)
        reply = ws.recv_until(lambda f: f["event"] in ("phx_reply", "presence_diff"))
        assert (reply["event"], reply["ref"]) == ("phx_reply", ref)
        diff = ws.recv_until(event("presence_diff"))["payload"]
        assert metas(diff["joins"], "me")[0]["n"] == n


def test_same_payload_twice_is_no_change(tenant, sockets):
    watcher, walker = sockets(tenant.publishable_key), sockets(tenant.publishable_key)
    watcher.join("room", **PRESENCE)
    walker.join("room", **PRESENCE)
    track(walker, "room", {"a": 1})
    watcher.recv_until(event("presence_diff"))
    assert track(walker, "room", {"a": 1})["payload"]["status"] == "ok"
    assert watcher.quiet(event("presence_diff"))


def test_untrack_and_server_chosen_keys(tenant, sockets):
    watcher, walker = sockets(tenant.publishable_key), sockets(tenant.publishable_key)
    watcher.join("room", **PRESENCE)
    walker.join("room", **PRESENCE)
    track(walker, "room", {"a": 1})
    [key] = watcher.recv_until(event("presence_diff"))["payload"]["joins"]
    # A random UUID chosen by the server: a time-based one (version 1) would
    # show every member the server's MAC address and clock.
    assert uuid.UUID(key).version == 4
    ref = walker.push(
        "realtime:room",
        "presence",
        {"type": "presence", "event": "untrack"},
        join_ref=walker.join_ref,
    )
    assert walker.reply_to(ref)["payload"]["status"] == "ok"
    assert list(watcher.recv_until(event("presence_diff"))["payload"]["leaves"]) == [
        key
    ]


def test_non_object_payload_is_refused_and_others_unaffected(tenant, sockets):
    watcher, walker = sockets(tenant.publishable_key), sockets(tenant.publishable_key)
    watcher.join("room", **PRESENCE)
    walker.join("room", **PRESENCE)
    refused = track(walker, "room", ["not", "a", "map"])
    assert refused["payload"] == {
        "status": "error",
        "response": {"reason": "Presence track payload must be a map"},
    }
    assert watcher.quiet(event("presence_diff"))
    track(walker, "room", {"fine": True})
    assert watcher.recv_until(event("presence_diff"))["payload"]["joins"]


def test_presence_crosses_processes(tenant, sockets, start_server):
    other = start_server()
    watcher, walker = (
        sockets(tenant.publishable_key),
        sockets(tenant.publishable_key, server=other),
    )
    watcher.join("room", **PRESENCE)
    walker.join("room", presence={"enabled": True, "key": "far"})
    track(walker, "room", {"where": "other process"})
    assert metas(watcher.recv_until(event("presence_diff"))["payload"]["joins"], "far")


def test_a_killed_process_presences_leave_within_the_bound(
    tenant, sockets, start_server
):
    doomed = start_server()
    watcher, walker = (
        sockets(tenant.publishable_key),
        sockets(tenant.publishable_key, server=doomed),
    )
    watcher.join("room", **PRESENCE)
    walker.join("room", presence={"enabled": True, "key": "ghost"})
    track(walker, "room", {"n": 1})
    watcher.recv_until(event("presence_diff"))
    doomed.kill()
    # Bounded by the liveness TTL plus one sweep; a few seconds of slack.
    leave = watcher.recv_until(event("presence_diff"), timeout=LEAVE_BOUND + 10)
    assert list(leave["payload"]["leaves"]) == ["ghost"]
    late = sockets(tenant.publishable_key)
    late.join("room", **PRESENCE)
    assert late.recv_until(event("presence_state"))["payload"] == {}
