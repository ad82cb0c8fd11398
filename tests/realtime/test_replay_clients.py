"""Broadcast replay and the resume cursor, as the official clients see them.

Real client processes (tests/realtime_clients.py) against real daphne
processes on PostgreSQL and Redis: what is asserted is what the application's
broadcast callback gets (`meta` included), and for the resume cursor that a
supabase-js app keeping `replay.since` at the last `meta.id` (README, Resume
cursor) neither loses nor repeats a change across a server restart and a
client that goes away and comes back. The frames themselves are checked in
test_replay.py.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from django.db import transaction

from realtime.auth import token_mint
from realtime.services.changes import ChangeInput, live_updates_record
from realtime.services.policies import channel_policy_add
from realtime.services.tenants import TenantCredentials, row_policy_add
from tests.realtime_clients import ClientFactory, ClientProcess, client_factory

pytestmark = pytest.mark.django_db(transaction=True)

KINDS = ["supabase-js", "realtime-js-v2", "realtime-js-v1", "python"]
TIMEOUT = 30.0
_ids = itertools.count(1)


@pytest.fixture
def clients() -> Iterator[ClientFactory]:
    with client_factory() as open_client:
        yield open_client


def call(client: ClientProcess, cmd: str, **fields: Any) -> Any:
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


def rest_broadcast(server: Any, key: str, topic: str, n: int) -> None:
    message = {"topic": topic, "event": "note", "payload": {"n": n}, "private": True}
    response = httpx.post(
        f"{server.url}/realtime/v1/api/broadcast",
        json={"messages": [message]},
        headers={"apikey": key},
        timeout=10,
    )
    assert response.status_code == 202, response.text


def callbacks(client: ClientProcess, topic: str, count: int) -> list[dict]:
    """The first `count` broadcast callbacks on `topic`, waiting for them."""
    seen: list[dict] = []

    def enough(event: dict) -> bool:  # each event is looked at once
        if event["event"] == "broadcast" and event["topic"] == topic:
            seen.append(event["payload"])
        return len(seen) >= count

    client.wait_for(enough, TIMEOUT)
    return seen


@pytest.mark.parametrize("kind", KINDS)
def test_the_callback_gets_replayed_messages_with_meta_then_live_ones(
    clients: ClientFactory, herald_server: Any, tenant: TenantCredentials, kind: str
) -> None:
    topic = f"replay-{kind}"
    for n in range(3):
        rest_broadcast(herald_server, tenant.secret_key, topic, n)
    client = clients(kind, herald_server, apikey=tenant.secret_key)
    config = {"private": True, "broadcast": {"replay": {"since": 0, "limit": 2}}}
    call(client, "on_broadcast", topic=topic, event="note", config=config)
    client.subscribe(topic, [], config=config)
    replayed = callbacks(client, topic, 2)
    assert [m["payload"] for m in replayed] == [{"n": 1}, {"n": 2}]
    assert [m["meta"]["replayed"] for m in replayed] == [True, True]
    assert int(replayed[0]["meta"]["id"]) < int(replayed[1]["meta"]["id"])
    assert replayed[0]["event"] == "note"

    rest_broadcast(herald_server, tenant.secret_key, topic, 3)
    live = callbacks(client, topic, 3)[2]
    assert live["payload"] == {"n": 3}
    assert live["meta"] == {"id": live["meta"]["id"]}
    assert int(live["meta"]["id"]) > int(replayed[1]["meta"]["id"])
    client.assert_no(lambda e: e["event"] in {"exception", "error"})


def test_malformed_replay_is_refused_to_the_client_with_supabases_wording(
    clients: ClientFactory, herald_server: Any, tenant: TenantCredentials
) -> None:
    client = clients("supabase-js", herald_server, apikey=tenant.secret_key)
    config = {"private": True, "broadcast": {"replay": {"since": "yesterday"}}}
    status = client.subscribe("bad-replay", [], config=config, expect="CHANNEL_ERROR")
    assert status["error"] == "UnableToReplayMessages: Replay params are not valid"


def test_a_reader_the_topic_policy_denies_gets_nothing_replayed(
    clients: ClientFactory, herald_server: Any, tenant: TenantCredentials
) -> None:
    rest_broadcast(herald_server, tenant.secret_key, "site:2", 1)
    rest_broadcast(herald_server, tenant.secret_key, "site:1", 1)
    channel_policy_add(
        tenant=tenant.tenant, pattern="site:{site_id}", role="authenticated"
    )
    token = token_mint(
        tenant=tenant.tenant,
        role="authenticated",
        sub="u1",
        claims={"site_id": 1},
        ttl=300,
    )
    client = clients(
        "supabase-js", herald_server, apikey=tenant.publishable_key, token=token
    )
    config = {"private": True, "broadcast": {"replay": {"since": 0}}}
    for topic in ("site:2", "site:1"):
        call(client, "on_broadcast", topic=topic, event="note", config=config)
    denied = client.subscribe("site:2", [], config=config, expect="CHANNEL_ERROR")
    assert denied["error"] == (
        "Unauthorized: You do not have permissions to read from this Channel "
        "topic: site:2"
    )
    client.subscribe("site:1", [], config=config)
    # The allowed topic's replay arrives; the denied one never did.
    assert callbacks(client, "site:1", 1)[0]["meta"]["replayed"] is True
    client.assert_no(lambda e: e["event"] == "broadcast" and e["topic"] == "site:2")


# --- The resume cursor (change feeds) -----------------------------------------------

FEED = "changes:todos"


def record(tenant: TenantCredentials, n: int, site_id: int = 1) -> None:
    """A database writer commits one INSERT on todos (no server involved)."""
    change = ChangeInput(
        table="todos",
        type="INSERT",
        record={"id": n, "site_id": site_id, "title": f"todo {n}"},
    )
    with transaction.atomic():
        live_updates_record(tenant=tenant.tenant, changes=[change])


def seen_ids(client: ClientProcess) -> list[int]:
    return [
        e["payload"]["payload"]["record"]["id"]
        for e in client.matching(lambda e: e["event"] == "broadcast")
    ]


def wait_for_todo(client: ClientProcess, n: int) -> dict:
    return client.wait_for(
        lambda e: (
            e["event"] == "broadcast" and e["payload"]["payload"]["record"]["id"] == n
        ),
        TIMEOUT,
    )["payload"]


def open_feed(
    clients: ClientFactory, server: Any, tenant: TenantCredentials, since: int
) -> ClientProcess:
    token = token_mint(
        tenant=tenant.tenant,
        role="authenticated",
        sub="u1",
        claims={"site_id": 1},
        ttl=3600,
    )
    client = clients("supabase-js", server, apikey=tenant.publishable_key, token=token)
    config = {"private": True, "broadcast": {"replay": {"since": since}}}
    call(client, "on_broadcast", topic=FEED, event="*", config=config, resume=True)
    client.subscribe(FEED, [], config=config)
    return client


def test_the_resume_cursor_survives_a_restart_and_a_new_client_with_supabase_js(
    clients: ClientFactory, start_server: Any, tenant: TenantCredentials
) -> None:
    tenant.tenant.change_feeds = True
    tenant.tenant.save()
    channel_policy_add(tenant=tenant.tenant, pattern=FEED, role="authenticated")
    row_policy_add(
        tenant=tenant.tenant,
        table="todos",
        role="authenticated",
        rules=[{"column": "site_id", "claim": "site_id"}],
    )
    server = start_server()
    for n in (1, 2):
        record(tenant, n)
    client = open_feed(clients, server, tenant, since=0)
    first = wait_for_todo(client, 2)
    assert first["event"] == "INSERT"
    assert first["meta"]["replayed"] is True
    record(tenant, 3)
    record(tenant, 99, site_id=2)  # another site's row: never seen, not even replayed
    live = wait_for_todo(client, 3)
    assert "replayed" not in live["meta"]

    # The server dies; writers go on; it comes back on the same port.
    server.kill()
    for n in (4, 5, 6):
        record(tenant, n)
    record(tenant, 98, site_id=2)
    server.restart()
    wait_for_todo(client, 6)  # supabase-js rejoined by itself, from its cursor
    record(tenant, 7)
    wait_for_todo(client, 7)
    assert seen_ids(client) == [1, 2, 3, 4, 5, 6, 7]
    cursors = [
        int(e["payload"]["meta"]["id"])
        for e in client.matching(lambda e: e["event"] == "broadcast")
    ]
    assert cursors == sorted(cursors) and len(set(cursors)) == 7

    # The browser closes; changes go on; it opens again from its saved cursor.
    client.close()
    record(tenant, 8)
    again = open_feed(clients, server, tenant, since=cursors[-1])
    wait_for_todo(again, 8)
    record(tenant, 9)
    wait_for_todo(again, 9)
    assert seen_ids(again) == [8, 9]
    again.assert_no(lambda e: e["event"] in {"exception", "error"})
