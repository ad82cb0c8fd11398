"""Broadcast replay on the wire: what is stored, what a join gets, what it is refused.

The official clients' view (meta handed to the callback, the resume cursor
through supabase-js) is in test_replay_clients.py.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from django.utils import timezone

from realtime.auth import token_mint
from realtime.models import HeraldMessage
from realtime.services.policies import channel_policy_add
from realtime.services.retention import messages_expire

pytestmark = pytest.mark.django_db(transaction=True)


def rest_broadcast(server: Any, key: str, topic: str, n: int, *, private=True) -> None:
    response = httpx.post(
        f"{server.url}/realtime/v1/api/broadcast",
        json={
            "messages": [
                {
                    "topic": topic,
                    "event": "note",
                    "payload": {"n": n},
                    "private": private,
                }
            ]
        },
        headers={"apikey": key},
        timeout=10,
    )
    assert response.status_code == 202, response.text


def broadcasts(ws, count: int) -> list[dict]:
    return [
        ws.recv_until(lambda f: f["event"] == "broadcast")["payload"]
        for _ in range(count)
    ]


def reason(reply: dict) -> str:
    return reply["payload"]["response"]["reason"]


def stored_count(tenant, topic: str) -> int:
    return HeraldMessage.objects.filter(
        tenant_slug=tenant.tenant.slug, topic=topic
    ).count()


def test_a_join_replays_stored_broadcasts_in_order_then_live_ones(
    tenant, sockets, herald_server
):
    for n in range(3):
        rest_broadcast(herald_server, tenant.secret_key, "room", n)
    ws = sockets(tenant.secret_key)
    joined = ws.join("room", private=True, broadcast={"replay": {"since": 0}})
    assert joined["payload"]["status"] == "ok"
    replayed = broadcasts(ws, 3)
    assert [m["payload"] for m in replayed] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert all(m["meta"]["replayed"] is True for m in replayed)
    ids = [int(m["meta"]["id"]) for m in replayed]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert all(m["event"] == "note" and m["type"] == "broadcast" for m in replayed)

    rest_broadcast(herald_server, tenant.secret_key, "room", 3)
    (live,) = broadcasts(ws, 1)
    assert live["payload"] == {"n": 3}
    assert live["meta"] == {"id": live["meta"]["id"]}  # no `replayed`
    assert int(live["meta"]["id"]) > ids[-1]


def test_socket_broadcasts_to_a_private_topic_are_stored_with_their_id(tenant, sockets):
    sender, listener = sockets(tenant.secret_key), sockets(tenant.secret_key)
    listener.join("chat", private=True)
    sender.join("chat", private=True, broadcast={"ack": True})
    ref = sender.push(
        "realtime:chat",
        "broadcast",
        {"type": "broadcast", "event": "say", "payload": {"text": "hi"}},
        join_ref=sender.join_ref,
    )
    assert sender.reply_to(ref)["payload"]["status"] == "ok"
    (live,) = broadcasts(listener, 1)
    stored = HeraldMessage.objects.get(tenant_slug=tenant.tenant.slug, topic="chat")
    assert live["meta"] == {"id": str(stored.pk)}
    assert (stored.event, stored.payload, stored.private) == (
        "say",
        {"text": "hi"},
        True,
    )

    late = sockets(tenant.secret_key)
    late.join("chat", private=True, broadcast={"replay": {"since": 0}})
    (again,) = broadcasts(late, 1)
    assert again["meta"] == {"replayed": True, "id": str(stored.pk)}
    assert again["payload"] == {"text": "hi"}


def test_public_broadcasts_are_not_stored(tenant, sockets, herald_server):
    rest_broadcast(herald_server, tenant.secret_key, "lobby", 1, private=False)
    assert stored_count(tenant, "lobby") == 0


def test_replay_gives_the_latest_messages_up_to_the_limit_capped_at_25(
    tenant, sockets, herald_server
):
    for n in range(30):
        rest_broadcast(herald_server, tenant.secret_key, "busy", n)
    ws = sockets(tenant.secret_key)
    ws.join("busy", private=True, broadcast={"replay": {"since": 0, "limit": 2}})
    assert [m["payload"]["n"] for m in broadcasts(ws, 2)] == [28, 29]
    assert ws.quiet(lambda f: f["event"] == "broadcast")

    capped = sockets(tenant.secret_key)
    capped.join("busy", private=True, broadcast={"replay": {"since": 0, "limit": 1000}})
    assert [m["payload"]["n"] for m in broadcasts(capped, 25)] == list(range(5, 30))
    assert capped.quiet(lambda f: f["event"] == "broadcast")


def test_replay_starts_at_since(tenant, sockets, herald_server):
    rest_broadcast(herald_server, tenant.secret_key, "timed", 0)
    old = HeraldMessage.objects.get(tenant_slug=tenant.tenant.slug, topic="timed")
    HeraldMessage.objects.filter(pk=old.pk).update(
        created_at=timezone.now() - timedelta(hours=1)
    )
    rest_broadcast(herald_server, tenant.secret_key, "timed", 1)
    since = int((timezone.now() - timedelta(minutes=30)).timestamp() * 1000)
    ws = sockets(tenant.secret_key)
    ws.join("timed", private=True, broadcast={"replay": {"since": since}})
    assert [m["payload"]["n"] for m in broadcasts(ws, 1)] == [1]
    assert ws.quiet(lambda f: f["event"] == "broadcast")


def test_database_broadcasts_are_replayed_and_carry_their_id_live(tenant, sockets):
    listener = sockets(tenant.secret_key)
    listener.join("db-topic", private=True)
    row = HeraldMessage.objects.create(
        tenant_slug=tenant.tenant.slug,
        topic="db-topic",
        event="row",
        payload={"from": "sql"},
        private=True,
    )
    (live,) = broadcasts(listener, 1)
    assert live["meta"] == {"id": str(row.pk)}
    late = sockets(tenant.secret_key)
    late.join("db-topic", private=True, broadcast={"replay": {"since": 0}})
    (again,) = broadcasts(late, 1)
    assert again == {
        "type": "broadcast",
        "event": "row",
        "payload": {"from": "sql"},
        "meta": {"replayed": True, "id": str(row.pk)},
    }


@pytest.mark.parametrize(
    "replay",
    [
        {"since": "0"},
        {"since": 1.5},
        {"since": None},
        {"limit": 5},
        {"since": 0, "limit": "5"},
        {"since": True},
        {"since": 10**18},
    ],
)
def test_malformed_replay_params_are_refused_with_supabases_wording(
    tenant, sockets, replay
):
    ws = sockets(tenant.secret_key)
    refused = ws.join("room", private=True, broadcast={"replay": replay})
    assert refused["payload"]["status"] == "error"
    assert reason(refused) == "UnableToReplayMessages: Replay params are not valid"
    # Nothing was held: the same socket joins fine afterwards.
    assert ws.join("room", private=True)["payload"]["status"] == "ok"


def test_replay_on_a_public_channel_is_refused(tenant, sockets):
    ws = sockets(tenant.secret_key)
    refused = ws.join("room", broadcast={"replay": {"since": 0}})
    assert reason(refused) == (
        "UnableToReplayMessages: Replay is not allowed for public channels"
    )


def test_a_replay_that_is_not_a_map_is_ignored_as_supabase_does(
    tenant, sockets, herald_server
):
    rest_broadcast(herald_server, tenant.secret_key, "room", 1)
    ws = sockets(tenant.secret_key)
    assert (
        ws.join("room", private=True, broadcast={"replay": 5})["payload"]["status"]
        == "ok"
    )
    assert ws.quiet(lambda f: f["event"] == "broadcast")


def test_a_reader_without_broadcast_read_gets_nothing_replayed(
    tenant, sockets, herald_server
):
    rest_broadcast(herald_server, tenant.secret_key, "site:1", 1)
    # May read presence on site:1, not broadcasts; may read nothing on site:2.
    channel_policy_add(
        tenant=tenant.tenant,
        pattern="site:{site_id}",
        role="authenticated",
        extension="presence",
    )
    token = token_mint(
        tenant=tenant.tenant,
        role="authenticated",
        sub="u1",
        claims={"site_id": 1},
        ttl=300,
    )
    ws = sockets(tenant.publishable_key)
    refused = ws.join(
        "site:1", private=True, token=token, broadcast={"replay": {"since": 0}}
    )
    assert reason(refused) == (
        "Unauthorized: You do not have permissions to read from this Channel "
        "topic: site:1"
    )
    refused = ws.join(
        "site:2", private=True, token=token, broadcast={"replay": {"since": 0}}
    )
    assert reason(refused).startswith("Unauthorized: You do not have permissions")
    assert ws.quiet(lambda f: f["event"] == "broadcast")


def test_replication_ready_is_answered_with_a_system_message(tenant, sockets):
    ws = sockets(tenant.secret_key)
    ws.join("room", broadcast={"replication_ready": True})
    system = ws.recv_until(lambda f: f["event"] == "system")
    assert system["payload"] == {
        "extension": "system",
        "status": "ok",
        "message": "Replication connection established",
        "channel": "room",
    }


def test_retention_prunes_stored_broadcasts_per_tenant(
    tenant, sockets, herald_server, settings
):
    tenant.tenant.broadcast_retention_hours = 2
    tenant.tenant.save()
    for n in range(3):
        rest_broadcast(herald_server, tenant.secret_key, "kept", n)
    HeraldMessage.objects.filter(payload__n__in=[0, 1]).update(
        created_at=timezone.now() - timedelta(hours=3)
    )
    # Past retention but not pruned yet: not replayed either.
    ws = sockets(tenant.secret_key)
    ws.join("kept", private=True, broadcast={"replay": {"since": 0}})
    assert [m["payload"]["n"] for m in broadcasts(ws, 1)] == [2]
    assert ws.quiet(lambda f: f["event"] == "broadcast")

    settings.HERALD_MESSAGES_RETENTION_HOURS = 100  # public retention: longer
    assert messages_expire() == 2
    assert list(
        HeraldMessage.objects.filter(topic="kept").values_list("payload", flat=True)
    ) == [{"n": 2}]


def test_no_live_broadcast_is_lost_or_doubled_around_a_replaying_join(
    tenant, sockets, herald_server
):
    """Broadcasts keep coming while clients join with replay: each joiner
    gets every message from its first replayed one on, once, in order."""
    for n in range(5):
        rest_broadcast(herald_server, tenant.secret_key, "stream", n)
    joiners = []
    for n in range(5, 15):
        ws = sockets(tenant.secret_key)
        ws.join("stream", private=True, broadcast={"replay": {"since": 0, "limit": 3}})
        joiners.append(ws)
        rest_broadcast(herald_server, tenant.secret_key, "stream", n)
    for ws in joiners:
        got = []
        while not got or got[-1] != 14:
            got.append(broadcasts(ws, 1)[0]["payload"]["n"])
        assert got == list(range(got[0], 15)), got


def todo(tenant, n: int, site_id: int = 1) -> int:
    from django.db import transaction

    from realtime.services.changes import ChangeInput, live_updates_record

    change = ChangeInput(
        table="todos", type="INSERT", record={"id": n, "site_id": site_id}
    )
    with transaction.atomic():
        (update,) = live_updates_record(tenant=tenant.tenant, changes=[change])
    return update.pk


def test_a_change_feed_replays_from_a_cursor_then_goes_live(tenant, sockets):
    tenant.tenant.change_feeds = True
    tenant.tenant.save()
    cursors = [todo(tenant, n) for n in range(3)]
    ws = sockets(tenant.secret_key, vsn="2.0.0")
    joined = ws.join(
        "changes:todos", private=True, broadcast={"replay": {"since": cursors[0]}}
    )
    assert joined["payload"]["status"] == "ok"
    replayed = broadcasts(ws, 2)
    assert [m["meta"] for m in replayed] == [
        {"replayed": True, "id": str(cursors[1])},
        {"replayed": True, "id": str(cursors[2])},
    ]
    assert [m["event"] for m in replayed] == ["INSERT", "INSERT"]
    assert replayed[0]["payload"]["record"] == {"id": 1, "site_id": 1}
    live = todo(tenant, 3)
    (got,) = broadcasts(ws, 1)
    assert got["meta"] == {"id": str(live)}
    assert got["payload"]["record"] == {"id": 3, "site_id": 1}


def test_a_change_feed_refuses_a_cursor_retention_deleted_past(tenant, sockets):
    tenant.tenant.change_feeds = True
    tenant.tenant.changes_pruned_through = 10
    tenant.tenant.save()
    ws = sockets(tenant.secret_key)
    refused = ws.join("changes:todos", private=True, broadcast={"replay": {"since": 3}})
    assert reason(refused).startswith(
        "UnableToReplayMessages: Changes after cursor 3 were deleted by retention"
    )
    joined = ws.join("changes:todos", private=True, broadcast={"replay": {"since": 10}})
    assert joined["payload"]["status"] == "ok"


def test_a_change_feed_carries_only_changes(tenant, sockets, herald_server):
    tenant.tenant.change_feeds = True
    tenant.tenant.save()
    ws = sockets(tenant.secret_key)
    ws.join("changes:todos", private=True, broadcast={"ack": True})
    ref = ws.push(
        "realtime:changes:todos",
        "broadcast",
        {"type": "broadcast", "event": "fake", "payload": {"record": {"id": 1}}},
        join_ref=ws.join_ref,
    )
    assert ws.reply_to(ref)["payload"]["response"] == {
        "reason": "A change feed carries only its table's changes"
    }
    rest_broadcast(herald_server, tenant.secret_key, "changes:todos", 1)
    assert ws.quiet(lambda f: f["event"] == "broadcast")
    assert stored_count(tenant, "changes:todos") == 0
    # Without change_feeds the topic is an ordinary private topic.
    tenant.tenant.change_feeds = False
    tenant.tenant.save()
    rest_broadcast(herald_server, tenant.secret_key, "changes:todos", 2)
    assert stored_count(tenant, "changes:todos") == 1


def test_a_change_feed_gives_nothing_to_a_reader_denied_its_broadcasts(tenant, sockets):
    tenant.tenant.change_feeds = True
    tenant.tenant.save()
    channel_policy_add(
        tenant=tenant.tenant,
        pattern="changes:todos",
        role="authenticated",
        extension="presence",
    )
    token = token_mint(
        tenant=tenant.tenant, role="authenticated", sub="u1", claims={}, ttl=300
    )
    ws = sockets(tenant.publishable_key)
    joined = ws.join("changes:todos", private=True, token=token)
    assert joined["payload"]["status"] == "ok"  # presence only
    todo(tenant, 1)
    assert ws.quiet(lambda f: f["event"] == "broadcast", wait=1.0)
    refused = ws.join(
        "changes:todos", private=True, token=token, broadcast={"replay": {"since": 0}}
    )
    assert reason(refused).startswith("Unauthorized: You do not have permissions")


@pytest.mark.parametrize("value", [False, None])
def test_replication_ready_off_sends_no_system_message(tenant, sockets, value):
    ws = sockets(tenant.secret_key)
    ws.join("room", broadcast={"replication_ready": value})
    assert ws.quiet(lambda f: f["event"] == "system")
