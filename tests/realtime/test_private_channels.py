"""Private channels: channel policies decide who reads and who writes."""

import pytest

from realtime.auth import token_mint
from realtime.services.policies import channel_policy_add

pytestmark = pytest.mark.django_db(transaction=True)


def user(tenant, site_id):
    return token_mint(
        tenant=tenant.tenant,
        role="authenticated",
        sub=f"u{site_id}",
        claims={"site_id": site_id},
        ttl=300,
    )


def policy(tenant, **fields):
    return channel_policy_add(tenant=tenant.tenant, **fields)


def broadcast(ws, topic, event="x"):
    body = {"type": "broadcast", "event": event, "payload": {}}
    return ws.push(f"realtime:{topic}", "broadcast", body, join_ref=ws.join_ref)


def is_broadcast(frame):
    return frame["event"] == "broadcast"


def test_without_a_read_policy_the_join_is_refused(tenant, sockets):
    policy(tenant, pattern="site:{site_id}", role="authenticated")
    ws = sockets(tenant.publishable_key)
    refused = ws.join("site:2", private=True, token=user(tenant, 1))
    assert refused["payload"]["response"] == {
        "reason": (
            "Unauthorized: You do not have permissions to read from this "
            "Channel topic: site:2"
        )
    }
    assert (
        ws.join("site:1", private=True, token=user(tenant, 1))["payload"]["status"]
        == "ok"
    )


def test_reader_without_write_cannot_broadcast_or_track(tenant, sockets):
    policy(
        tenant, pattern="site:{site_id}", role="authenticated", read=True, write=False
    )
    reader, other = sockets(tenant.publishable_key), sockets(tenant.secret_key)
    reader.join("site:1", private=True, token=user(tenant, 1), broadcast={"ack": True})
    other.join("site:1", private=True)
    denied = reader.reply_to(broadcast(reader, "site:1"))
    assert denied["payload"]["response"]["reason"].startswith(
        "Unauthorized: You do not have permissions to write"
    )
    assert other.quiet(is_broadcast)
    ref = reader.push(
        "realtime:site:1",
        "presence",
        {"type": "presence", "event": "track", "payload": {"a": 1}},
        join_ref=reader.join_ref,
    )
    assert reader.reply_to(ref)["payload"]["status"] == "error"


def test_writer_broadcasts_to_readers_of_the_private_topic_only(tenant, sockets):
    policy(
        tenant, pattern="site:{site_id}", role="authenticated", read=True, write=True
    )
    writer, reader, public = (sockets(tenant.publishable_key) for _ in range(3))
    writer.join("site:1", private=True, token=user(tenant, 1))
    reader.join("site:1", private=True, token=user(tenant, 1))
    public.join("site:1")  # the public topic of the same name is another room
    broadcast(writer, "site:1", "secret")
    assert reader.recv_until(is_broadcast)["payload"]["event"] == "secret"
    assert public.quiet(is_broadcast)


def test_presence_only_readers_get_no_broadcasts(tenant, sockets):
    policy(tenant, pattern="lobby", extension="presence", read=True)
    policy(tenant, pattern="lobby", role="service_role", write=True)
    watcher, admin = sockets(tenant.publishable_key), sockets(tenant.secret_key)
    watcher.join(
        "lobby", private=True, token=user(tenant, 1), presence={"enabled": True}
    )
    admin.join("lobby", private=True)
    broadcast(admin, "lobby")
    assert watcher.quiet(is_broadcast)


def test_another_tenants_principal_gets_nothing(make_tenant, sockets):
    a, b = make_tenant("A"), make_tenant("B")
    policy(a, pattern="*", read=True, write=True)
    outsider = sockets(b.publishable_key)
    refused = outsider.join("room", private=True, token=user(b, 1))
    assert refused["payload"]["status"] == "error"
    forged = sockets(a.publishable_key).join("room", private=True, token=user(b, 1))
    assert forged["payload"]["response"]["reason"].startswith("JwtSignatureError")


def test_a_member_of_several_sites_joins_each_of_them_and_no_other(tenant, sockets):
    policy(tenant, pattern="site:{site_ids}", role="authenticated")
    token = token_mint(
        tenant=tenant.tenant,
        role="authenticated",
        sub="member",
        claims={"site_ids": [1, 2]},
        ttl=300,
    )
    ws = sockets(tenant.publishable_key)
    for topic in ("site:1", "site:2"):
        assert ws.join(topic, private=True, token=token)["payload"]["status"] == "ok"
    refused = ws.join("site:3", private=True, token=token)
    assert refused["payload"]["status"] == "error"
