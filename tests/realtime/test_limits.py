"""Per-tenant limits, reached through real sockets, answered with Supabase's reasons."""

import pytest
from websockets.exceptions import ConnectionClosed

from realtime.auth import token_mint

pytestmark = pytest.mark.django_db(transaction=True)


def limit(tenant, **limits):
    for name, value in limits.items():
        setattr(tenant.tenant, name, value)
    tenant.tenant.save()


def refused_with(ws, reason):
    frame = ws.recv_until(lambda f: f["event"] == "phx_reply")
    assert frame["topic"] == "phoenix"
    assert frame["payload"] == {"status": "error", "response": {"reason": reason}}
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv()
    return closed.value.rcvd.code


def test_concurrent_connections_per_tenant(make_tenant, sockets):
    a, b = make_tenant("A"), make_tenant("B")
    limit(a, max_concurrent_users=2)
    first, second = sockets(a.publishable_key), sockets(a.publishable_key)
    for ws in (first, second):
        assert ws.join("room")["payload"]["status"] == "ok"
    third = sockets(a.publishable_key)
    code = refused_with(third, "ConnectionRateLimitReached: Too many connected users")
    assert code == 4029
    # Another tenant is not affected; a freed place can be taken again.
    assert sockets(b.publishable_key).join("room")["payload"]["status"] == "ok"
    first.close()
    for _ in range(50):
        again = sockets(a.publishable_key)
        if (
            again.join(
                "room",
            )["payload"]["status"]
            == "ok"
        ):
            break
    else:
        pytest.fail("the place freed by a disconnect was never given back")


def test_connections_per_user(tenant, sockets):
    limit(tenant, max_connections_per_user=1)
    ann = token_mint(tenant=tenant.tenant, role="authenticated", sub="ann", ttl=300)
    bob = token_mint(tenant=tenant.tenant, role="authenticated", sub="bob", ttl=300)
    assert sockets(ann).join("room")["payload"]["status"] == "ok"
    refused_with(
        sockets(ann), "ConnectionRateLimitReached: Too many connections for this user"
    )
    assert sockets(bob).join("room")["payload"]["status"] == "ok"


def test_joins_per_second(tenant, sockets):
    limit(tenant, max_joins_per_second=2)
    ws = sockets(tenant.publishable_key)
    # Five joins in a burst span at most two one-second windows, so one of
    # them holds three or more.
    refs = [
        ws.push(
            f"realtime:room-{i}",
            "phx_join",
            {"config": {}},
            ref=str(100 + i),
            join_ref=str(100 + i),
        )
        for i in range(5)
    ]
    replies = [ws.reply_to(ref)["payload"] for ref in refs]
    refused = [r for r in replies if r["status"] == "error"]
    assert refused
    assert all(
        r["response"]
        == {"reason": "ClientJoinRateLimitReached: Too many joins per second"}
        for r in refused
    )


def test_messages_per_second_shut_the_channel(tenant, sockets):
    limit(tenant, max_events_per_second=3)
    ws, other = sockets(tenant.publishable_key), sockets(tenant.publishable_key)
    ws.join("room")
    other.join("room")
    for n in range(10):
        ws.push(
            "realtime:room",
            "broadcast",
            {"type": "broadcast", "event": "spam", "payload": {"n": n}},
            join_ref=ws.join_ref,
        )
    system = ws.recv_until(lambda f: f["event"] == "system")
    assert system["payload"] == {
        "extension": "system",
        "status": "error",
        "message": "Too many messages per second",
        "channel": "room",
    }
    assert ws.recv_until(lambda f: f["event"] == "phx_close")["ref"] == ws.join_ref
    # Past the shutdown, what is still sent in that second is answered too.
    ref = ws.push("realtime:room", "phx_join", {"config": {}})
    reply = ws.reply_to(ref)["payload"]
    assert reply["status"] == "ok" or reply["response"] == {
        "reason": "Too many messages per second"
    }


def test_presence_events_per_second(tenant, sockets):
    limit(tenant, max_presence_events_per_second=2)
    ws = sockets(tenant.publishable_key)
    ws.join("room", presence={"enabled": True})
    for n in range(6):
        ws.push(
            "realtime:room",
            "presence",
            {"type": "presence", "event": "track", "payload": {"n": n}},
            join_ref=ws.join_ref,
        )
    system = ws.recv_until(lambda f: f["event"] == "system")
    assert system["payload"]["message"] == "Too many presence messages per second"
    ws.recv_until(lambda f: f["event"] == "phx_close")


def test_a_rate_that_redis_cannot_count_lets_the_event_through():
    import asyncio

    import redis.asyncio as redis

    from realtime.limits import RedisCounters
    from tests.services import free_port

    nowhere = redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    assert asyncio.run(RedisCounters(nowhere).hit("joins:1", 1)) is True
