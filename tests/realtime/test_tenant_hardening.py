"""Tenant hardening as Supabase has it: private-only tenants, the per-channel
client presence limit, and Herald's cap on the keys of a presence payload.

Through the official clients where they show the refusal, and raw sockets
(tests/wire.py) where the exact frames matter.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from audit.models import ActivityLog, EventType
from realtime.auth import token_mint
from realtime.presence import CLIENT_PRESENCE_WINDOW, PresenceWindow, too_many_keys
from realtime.services.policies import channel_policy_add
from realtime.services.tenants import TenantCredentials, tenant_private_only_set
from tests.realtime_clients import ClientFactory, client_factory

pytestmark = pytest.mark.django_db(transaction=True)

PRIVATE_ONLY = "PrivateOnly: This project only allows private channels"
CLIENT_LIMIT = "Client presence rate limit exceeded"
KEYS_REFUSED = "Presence track payload holds at most 100 keys (at every level)"


@pytest.fixture
def clients() -> Iterator[ClientFactory]:
    with client_factory() as open_client:
        yield open_client


def settled(check: Callable[[], Any], timeout: float = 10) -> Any:
    """Wait until `check()` is truthy (audit rows are written after the reply)."""
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() > deadline:
            raise AssertionError("never settled")
        time.sleep(0.05)
    return found


def private_only(tenant: TenantCredentials) -> None:
    tenant.tenant.private_only = True
    tenant.tenant.save(update_fields=["private_only"])


def user_token(tenant: TenantCredentials) -> str:
    return token_mint(tenant=tenant.tenant, role="authenticated", sub="u-1", ttl=600)


# --- private_only ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["supabase-js", "python"])
def test_a_private_only_tenant_refuses_public_channels(
    kind: str,
    clients: ClientFactory,
    herald_server: Any,
    make_tenant: Callable[..., TenantCredentials],
) -> None:
    tenant, other = make_tenant("Closed"), make_tenant("Open")
    private_only(tenant)
    channel_policy_add(tenant=tenant.tenant, pattern="room-*", role="authenticated")
    client = clients(
        kind, herald_server, apikey=tenant.publishable_key, token=user_token(tenant)
    )
    refused = client.subscribe("room-1", [], expect="CHANNEL_ERROR")
    assert PRIVATE_ONLY in refused["error"]
    # A private channel of the same tenant is what it allows.
    client.subscribe("room-2", [], config={"private": True})
    # Another tenant is not private-only.
    clients(kind, herald_server, apikey=other.publishable_key).subscribe("room-1", [])
    refusal = settled(
        lambda: ActivityLog.objects.filter(
            tenant=tenant.tenant, event_type=EventType.JOIN_REFUSED
        ).first()
    )
    assert refusal.target == "realtime:room-1"
    assert refusal.details == {"reason": PRIVATE_ONLY}


def test_private_only_refusal_on_the_wire(
    sockets: Any, tenant: TenantCredentials
) -> None:
    private_only(tenant)
    ws = sockets(tenant.publishable_key)
    # `private: "false"` is public too (Supabase reads booleans flexibly).
    for private in (False, "false"):
        reply = ws.join("room", private=private)  # type: ignore[arg-type]
        assert reply["payload"] == {
            "status": "error",
            "response": {"reason": PRIVATE_ONLY},
        }
    # Nothing was held: a private join with a policy still gets through.
    channel_policy_add(tenant=tenant.tenant, pattern="room")
    assert ws.join("room", private=True)["payload"]["status"] == "ok"


def test_turning_private_only_on_closes_the_tenants_sockets(
    sockets: Any, tenant: TenantCredentials
) -> None:
    """As Supabase: sockets hold the tenant as it was, so they are closed."""
    ws = sockets(tenant.publishable_key)
    assert ws.join("room")["payload"]["status"] == "ok"
    tenant_private_only_set(tenant=tenant.tenant, private_only=True, actor="test")
    system = ws.recv_until(lambda f: f["event"] == "system")
    assert "private_only is now on" in system["payload"]["message"]
    ws.recv_until(lambda f: f["event"] == "phx_close")
    again = sockets(tenant.publishable_key)
    assert again.join("room")["payload"]["response"] == {"reason": PRIVATE_ONLY}
    row = ActivityLog.objects.get(
        tenant=tenant.tenant, event_type=EventType.POLICY_CHANGED
    )
    assert (row.target, row.details, row.actor) == (
        "private_only",
        {"private_only": True},
        "test",
    )


# --- The client presence limit --------------------------------------------------


def track(ws: Any, topic: str, payload: Any) -> str:
    return ws.push(
        f"realtime:{topic}",
        "presence",
        {"type": "presence", "event": "track", "payload": payload},
        join_ref=ws.join_ref,
    )


def test_a_sixth_presence_call_in_the_window_shuts_the_channel(
    sockets: Any, tenant: TenantCredentials
) -> None:
    ws = sockets(tenant.publishable_key)
    ws.join("busy", presence={"enabled": True})
    busy_ref = ws.join_ref
    ws.join("calm", presence={"enabled": True})
    calm_ref = ws.join_ref
    ws.join_ref = busy_ref
    for n in range(5):
        reply = ws.reply_to(track(ws, "busy", {"n": n}))
        assert reply["payload"]["status"] == "ok"
    track(ws, "busy", {"n": 5})
    system = ws.recv_until(
        lambda f: f["event"] == "system" and f["topic"] == "realtime:busy"
    )
    assert system["payload"] == {
        "extension": "system",
        "status": "error",
        "message": CLIENT_LIMIT,
        "channel": "busy",
    }
    ws.recv_until(lambda f: f["event"] == "phx_close" and f["topic"] == "realtime:busy")
    # The limit is per channel, as Supabase counts it: the other one tracks on.
    ws.join_ref = calm_ref
    assert ws.reply_to(track(ws, "calm", {"n": 0}))["payload"]["status"] == "ok"
    limited = settled(
        lambda: ActivityLog.objects.filter(
            tenant=tenant.tenant, event_type=EventType.RATE_LIMITED
        ).first()
    )
    assert limited.details == {
        "reason": f"ClientPresenceRateLimitReached: {CLIENT_LIMIT}"
    }


@pytest.mark.parametrize("kind", ["supabase-js", "python"])
def test_a_client_tracking_too_often_is_told_and_closed(
    kind: str, clients: ClientFactory, herald_server: Any, tenant: TenantCredentials
) -> None:
    client = clients(kind, herald_server, apikey=tenant.publishable_key)
    client.subscribe("lobby", [], config={"presence": {"enabled": True}})
    since = client.mark()
    for n in range(6):
        client.send("track", topic="lobby", payload={"n": n})
    # supabase-js hands the system message to `on('system')`; the Python
    # client reports it as the channel's error.
    told = client.wait_for(
        lambda e: (
            e.get("topic") == "lobby"
            and CLIENT_LIMIT in str(e.get("payload", "")) + str(e.get("error", ""))
        ),
        since=since,
    )
    assert told["event"] in {"system", "status"}
    client.wait_for(
        lambda e: e["event"] == "status" and e["status"] == "CLOSED", since=since
    )
    # The five before were accepted (the sixth gets no reply: the channel shut).
    tracked = client.matching(lambda e: e["event"] == "done", since=since)
    assert len(tracked) >= 5


def test_the_window_opens_again_after_thirty_seconds() -> None:
    """Supabase's fixed window, on an injected clock (no waiting)."""
    window = PresenceWindow()
    assert all(window.allow(100.0 + n) for n in range(5))
    assert not window.allow(110.0)
    assert not window.allow(100.0 + CLIENT_PRESENCE_WINDOW)
    assert window.allow(100.0 + CLIENT_PRESENCE_WINDOW + 0.001)
    assert window.calls == 1


# --- Keys of a presence payload -------------------------------------------------


def test_a_presence_payload_with_too_many_keys_is_refused_and_stores_nothing(
    sockets: Any, tenant: TenantCredentials
) -> None:
    ws = sockets(tenant.publishable_key)
    ws.join("room", presence={"enabled": True})
    wide = {f"k{n}": n for n in range(101)}
    nested = {"a": [{f"k{n}": n for n in range(60)}, {f"j{n}": n for n in range(60)}]}
    for payload in (wide, nested):
        reply = ws.reply_to(track(ws, "room", payload))
        assert reply["payload"] == {
            "status": "error",
            "response": {"reason": KEYS_REFUSED},
        }
    ok = ws.reply_to(track(ws, "room", {f"k{n}": n for n in range(100)}))
    assert ok["payload"]["status"] == "ok"
    watcher = sockets(tenant.publishable_key)
    watcher.join("room", presence={"enabled": True})
    state = watcher.recv_until(lambda f: f["event"] == "presence_state")["payload"]
    [entry] = state.values()
    assert len(entry["metas"]) == 1
    assert set(entry["metas"][0]) == {f"k{n}" for n in range(100)} | {"phx_ref"}


def test_keys_are_counted_at_every_level_and_stop_early() -> None:
    assert not too_many_keys({"a": {"b": {"c": 1}}}, limit=3)
    assert too_many_keys({"a": {"b": {"c": 1, "d": 2}}}, limit=3)
    assert too_many_keys([{"a": 1}, [{"b": 2, "c": 3, "d": 4}]], limit=3)
    assert not too_many_keys("not an object")
