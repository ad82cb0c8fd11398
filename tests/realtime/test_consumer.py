"""The WebSocket endpoint's server side, frame by frame, on real server processes."""

import signal
import time

import httpx
import orjson
import pytest

from realtime.auth import token_mint
from realtime.layer import broadcast_send, layer_sync, topic_group
from realtime.services.changes import ChangeInput, live_updates_record
from realtime.services.tenants import row_policy_add
from subscriptions.models import Subscription

pytestmark = pytest.mark.django_db(transaction=True)

SITE_1 = [
    {"event": "*", "schema": "public", "table": "orders", "filter": "site_id=eq.1"}
]


def publish(tenant, table="orders", type="INSERT", **record):
    old = {"id": record.get("id"), "site_id": record.get("site_id")}
    change = ChangeInput(
        table=table,
        type=type,
        record=None if type == "DELETE" else record,
        old_record=old if type != "INSERT" else None,
    )
    return live_updates_record(tenant=tenant.tenant, changes=[change])[0]


def is_change(frame):
    return frame["event"] == "postgres_changes"


def user_token(tenant, site_id, ttl=300):
    return token_mint(
        tenant=tenant.tenant,
        role="authenticated",
        sub=f"user-{site_id}",
        claims={"site_id": site_id},
        ttl=ttl,
    )


def test_join_opens_a_subscription_and_leave_closes_it_with_its_count(tenant, sockets):
    ws = sockets(tenant.secret_key)
    assert ws.join("shop", bindings=SITE_1)["payload"]["status"] == "ok"
    sub = Subscription.objects.get(tenant=tenant.tenant)
    assert (sub.topic, sub.state, sub.role) == (
        "realtime:shop",
        "active",
        "service_role",
    )
    assert sub.bindings[0]["filter"] == "site_id=eq.1" and sub.bindings[0]["id"] > 0
    publish(tenant, id=1, site_id=1)
    publish(tenant, id=2, site_id=1)
    ws.changes(2)
    ref = ws.push("realtime:shop", "phx_leave", {}, join_ref=ws.join_ref)
    assert ws.reply_to(ref)["payload"] == {"status": "ok", "response": {}}
    closed = ws.recv()
    assert (closed["event"], closed["ref"]) == ("phx_close", ws.join_ref)
    sub.refresh_from_db()
    assert (sub.state, sub.delivered_count) == ("closed", 2)


def test_disconnect_closes_every_subscription(tenant, sockets):
    ws = sockets(tenant.secret_key)
    ws.join("a", bindings=SITE_1)
    ws.join("b", bindings=SITE_1)
    assert Subscription.objects.filter(state="active").count() == 2
    ws.close()
    deadline = time.monotonic() + 10
    while (
        Subscription.objects.filter(state="active").exists()
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert not Subscription.objects.filter(state="active").exists()


def test_vsn2_frames_carry_the_join_ref_only_where_phoenix_does(tenant, sockets):
    ws = sockets(tenant.secret_key, vsn="2.0.0")
    joined = ws.join("shop", bindings=SITE_1)
    assert joined["join_ref"] == ws.join_ref and joined["ref"] == ws.join_ref
    system = ws.recv_until(lambda f: f["event"] == "system")
    assert (system["join_ref"], system["ref"]) == (ws.join_ref, None)
    assert system["payload"] == {
        "extension": "postgres_changes",
        "status": "ok",
        "message": "Subscribed to PostgreSQL",
        "channel": "shop",
    }
    row = publish(tenant, id=1, site_id=1)
    [change] = ws.changes(1)
    assert change["raw"][:4] == [None, None, "realtime:shop", "postgres_changes"]
    assert change["payload"]["data"]["seq"] == row.pk


def test_filters_apply_to_deletes_too(tenant, sockets):
    ws = sockets(tenant.secret_key)
    ws.join(
        "shop",
        bindings=[
            {
                "event": "DELETE",
                "schema": "public",
                "table": "orders",
                "filter": "site_id=eq.1",
            }
        ],
    )
    publish(tenant, type="DELETE", id=2, site_id=2)
    marker = publish(tenant, type="DELETE", id=1, site_id=1)
    [change] = ws.changes(1)
    data = change["payload"]["data"]
    assert (data["type"], data["seq"], data["old_record"]) == (
        "DELETE",
        marker.pk,
        {"id": 1, "site_id": 1},
    )
    assert "record" not in data


def test_schema_binding_receives_every_table_of_its_tenant_only(make_tenant, sockets):
    a, b = make_tenant("A"), make_tenant("B")
    ws = sockets(a.secret_key)
    ws.join("all", bindings=[{"event": "*", "schema": "public"}])
    publish(b, table="orders", id=9, site_id=1)
    publish(a, table="orders", id=1, site_id=1)
    publish(a, table="invoices", id=2, site_id=1)
    tables = [c["payload"]["data"]["table"] for c in ws.changes(2)]
    assert tables == ["orders", "invoices"]
    assert ws.quiet(is_change)


def test_a_table_and_a_schema_binding_on_one_channel_get_each_change_once(
    tenant, sockets
):
    """One frame per change, naming every binding it matches, as Supabase
    sends it; never one per binding."""
    ws = sockets(tenant.secret_key)
    reply = ws.join(
        "mix",
        bindings=[
            {"event": "*", "schema": "public"},
            {"event": "INSERT", "schema": "public", "table": "orders"},
        ],
    )
    every, orders = [b["id"] for b in reply["payload"]["response"]["postgres_changes"]]
    first = publish(tenant, table="orders", id=1, site_id=1)
    second = publish(tenant, table="invoices", id=2, site_id=1)
    frames = [c["payload"] for c in ws.changes(2)]
    assert [(f["data"]["seq"], sorted(f["ids"])) for f in frames] == [
        (first.pk, sorted([every, orders])),
        (second.pk, [every]),
    ]
    assert ws.quiet(is_change)


def test_a_publish_of_many_changes_arrives_as_separate_frames_in_order(tenant, sockets):
    """One publish reaches each socket in one write: still one frame per change,
    each socket only its own share, in cursor order, on both protocol versions."""
    row_policy_add(
        tenant=tenant.tenant,
        table="orders",
        role="authenticated",
        rules=[{"column": "site_id", "claim": "site_id"}],
    )
    every = sockets(tenant.secret_key, vsn="2.0.0")
    every.join("shop", bindings=[{"event": "*", "schema": "public", "table": "orders"}])
    site_1 = sockets(tenant.secret_key)
    site_1.join("shop", bindings=SITE_1)
    user_2 = sockets(tenant.publishable_key)
    bindings = [{"event": "INSERT", "schema": "public", "table": "orders"}]
    user_2.join("shop", bindings=bindings, token=user_token(tenant, 2))
    changes = [
        ChangeInput(
            table="orders", type="INSERT", record={"id": n, "site_id": n % 2 + 1}
        )
        for n in range(1, 7)
    ]
    changes.append(
        ChangeInput(
            table="orders",
            type="UPDATE",
            record={"id": 2, "site_id": 1},
            old_record={"id": 2, "site_id": 1},
        )
    )
    rows = live_updates_record(tenant=tenant.tenant, changes=changes)

    def seqs(ws, count):
        return [c["payload"]["data"]["seq"] for c in ws.changes(count)]

    assert seqs(every, 7) == [r.pk for r in rows]
    site_1_rows = [r for r in rows if r.record["site_id"] == 1]
    assert seqs(site_1, 4) == [r.pk for r in site_1_rows]
    assert seqs(user_2, 3) == [r.pk for r in rows[:6] if r.record["site_id"] == 2]
    for ws in (every, site_1, user_2):
        assert ws.quiet(is_change)


def test_a_process_that_fell_behind_delivers_every_message_in_order(
    tenant, sockets, herald_server
):
    """Publishes and a broadcast pile up while the server process is stalled;
    it then reads the changes from the log and takes the broadcast off its
    channel, and each socket still gets one frame per change, only its share,
    in cursor order, and the broadcast once. (Changes and broadcasts travel
    separately, the log and the layer: their relative order is not kept.)"""
    every = sockets(tenant.secret_key)
    every.join("shop", bindings=[{"event": "*", "schema": "public", "table": "orders"}])
    site_1 = sockets(tenant.secret_key, vsn="2.0.0")
    site_1.join("shop", bindings=SITE_1)
    herald_server.process.send_signal(signal.SIGSTOP)
    try:
        rows = [publish(tenant, id=1, site_id=1), publish(tenant, id=2, site_id=1)]
        layer_sync(
            broadcast_send,
            topic_group(tenant.tenant.pk, "shop", private=False),
            topic="realtime:shop",
            payload_json=orjson.dumps(
                {"type": "broadcast", "event": "note", "payload": {"after": 2}}
            ),
        )
        rows += live_updates_record(
            tenant=tenant.tenant,
            changes=[
                ChangeInput(table="orders", type="INSERT", record=record)
                for record in ({"id": 3, "site_id": 2}, {"id": 4, "site_id": 1})
            ],
        )
    finally:
        herald_server.process.send_signal(signal.SIGCONT)

    def next_events(ws, count):
        frames = [
            ws.recv_until(lambda f: f["event"] in ("postgres_changes", "broadcast"))
            for _ in range(count)
        ]
        changes = [f["payload"]["data"]["seq"] for f in frames if is_change(f)]
        broadcasts = [f["payload"]["payload"] for f in frames if not is_change(f)]
        return changes, broadcasts

    seqs = [row.pk for row in rows]
    assert next_events(every, 5) == (seqs, [{"after": 2}])
    assert next_events(site_1, 4) == ([*seqs[:2], seqs[3]], [{"after": 2}])
    assert every.quiet(is_change) and site_1.quiet(is_change)


def test_a_backlog_larger_than_one_write_arrives_whole_and_in_order(
    tenant, sockets, herald_server
):
    """700 changes queued for a stalled process (the first publish goes to the
    wait it had pending): more than it writes a socket at once (500); all of
    them arrive, in order, each once."""
    ws = sockets(tenant.secret_key, vsn="2.0.0")
    ws.join(
        "shop", bindings=[{"event": "INSERT", "schema": "public", "table": "orders"}]
    )
    herald_server.process.send_signal(signal.SIGSTOP)
    try:
        rows = []
        for start in range(0, 700, 100):
            rows += live_updates_record(
                tenant=tenant.tenant,
                changes=[
                    ChangeInput(table="orders", type="INSERT", record={"id": n})
                    for n in range(start, start + 100)
                ],
            )
    finally:
        herald_server.process.send_signal(signal.SIGCONT)
    seqs = [c["payload"]["data"]["seq"] for c in ws.changes(700, timeout=30)]
    assert seqs == [row.pk for row in rows]
    assert ws.quiet(is_change)


def test_refreshed_token_changes_which_rows_arrive(tenant, sockets):
    row_policy_add(
        tenant=tenant.tenant,
        table="orders",
        role="authenticated",
        rules=[{"column": "site_id", "claim": "site_id"}],
    )
    ws = sockets(tenant.publishable_key)
    bindings = [{"event": "*", "schema": "public", "table": "orders"}]
    assert (
        ws.join("shop", bindings=bindings, token=user_token(tenant, 1))["payload"][
            "status"
        ]
        == "ok"
    )
    publish(tenant, id=1, site_id=1)
    assert ws.changes(1)[0]["payload"]["data"]["record"]["site_id"] == 1
    ws.push(
        "realtime:shop",
        "access_token",
        {"access_token": user_token(tenant, 2)},
        join_ref=ws.join_ref,
    )
    # Once the refresh is handled, site 2's rows come and site 1's no longer do.
    ws.push("phoenix", "heartbeat", {})
    ws.recv_until(lambda f: f["topic"] == "phoenix")
    publish(tenant, id=2, site_id=1)
    publish(tenant, id=3, site_id=2)
    [change] = ws.changes(1)
    assert change["payload"]["data"]["record"] == {"id": 3, "site_id": 2}


def test_expired_token_closes_the_channel_with_supabases_message(tenant, sockets):
    ws = sockets(tenant.publishable_key)
    ws.join("shop", bindings=SITE_1, token=user_token(tenant, 1, ttl=2))
    system = ws.recv_until(
        lambda f: f["event"] == "system" and f["payload"]["extension"] == "system",
        timeout=15,
    )
    assert system["payload"]["status"] == "error"
    assert system["payload"]["message"].startswith("Token has expired")
    assert system["payload"]["channel"] == "shop"
    closed = ws.recv_until(lambda f: f["event"] == "phx_close")
    assert closed["ref"] == ws.join_ref
    publish(tenant, id=1, site_id=1)
    assert ws.quiet(is_change)


def test_refresh_with_a_forged_token_closes_the_channel(make_tenant, sockets):
    a, b = make_tenant("A"), make_tenant("B")
    ws = sockets(a.publishable_key)
    ws.join("shop", bindings=SITE_1, token=user_token(a, 1))
    ws.push(
        "realtime:shop",
        "access_token",
        {"access_token": user_token(b, 1)},
        join_ref=ws.join_ref,
    )
    system = ws.recv_until(
        lambda f: f["event"] == "system" and f["payload"]["extension"] == "system"
    )
    assert system["payload"]["message"] == "Failed to validate JWT signature"
    assert (
        ws.recv_until(lambda f: f["event"] == "phx_close")["topic"] == "realtime:shop"
    )


def test_private_channel_needs_a_read_policy(tenant, sockets):
    ws = sockets(tenant.publishable_key)
    refused = ws.join("secret-room", private=True)
    assert refused["payload"] == {
        "status": "error",
        "response": {
            "reason": (
                "Unauthorized: You do not have permissions to read from this "
                "Channel topic: secret-room"
            )
        },
    }


def test_channel_limit_per_connection(tenant, sockets):
    tenant.tenant.max_channels_per_client = 2
    tenant.tenant.save()
    ws = sockets(tenant.secret_key)
    assert ws.join("one")["payload"]["status"] == "ok"
    assert ws.join("two")["payload"]["status"] == "ok"
    assert ws.join("three")["payload"]["response"] == {
        "reason": "ChannelRateLimitReached: Too many channels"
    }


def test_second_join_of_a_topic_replaces_the_first(tenant, sockets):
    ws = sockets(tenant.secret_key)
    ws.join("shop", bindings=SITE_1)
    first = ws.join_ref
    ref = ws.push("realtime:shop", "phx_join", {"config": {"postgres_changes": SITE_1}})
    closed = ws.recv_until(lambda f: f["event"] == "phx_close")
    assert closed["ref"] == first
    assert ws.reply_to(ref)["payload"]["status"] == "ok"
    publish(tenant, id=1, site_id=1)
    ws.changes(1)
    assert ws.quiet(is_change), "the replaced channel still receives"


def test_every_socket_of_a_shared_audience_gets_each_change_once(tenant, sockets):
    group = [sockets(tenant.secret_key) for _ in range(20)]
    other = sockets(tenant.secret_key, vsn="2.0.0")
    for ws in group:
        ws.join("shop", bindings=SITE_1)
    other.join("elsewhere", bindings=SITE_1)
    row = publish(tenant, id=1, site_id=1)
    for ws in [*group, other]:
        [change] = ws.changes(1)
        assert change["payload"]["data"]["seq"] == row.pk
    assert all(ws.quiet(is_change, wait=0.2) for ws in group)


def test_a_change_published_through_one_process_reaches_a_client_on_another(
    tenant, sockets, herald_server, start_server
):
    second = start_server()
    ws = sockets(tenant.secret_key, server=second)
    ws.join("shop", bindings=SITE_1)
    response = httpx.post(
        f"{herald_server.url}/api/changes",
        headers={"apikey": tenant.secret_key},
        json={"table": "orders", "type": "INSERT", "record": {"id": 5, "site_id": 1}},
    )
    assert response.status_code == 201
    [change] = ws.changes(1)
    assert change["payload"]["data"]["seq"] == response.json()["changes"][0]["seq"]
