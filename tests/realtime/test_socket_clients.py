"""postgres_changes end to end: the official clients against a real server.

Each test drives real client processes (tests/realtime_clients.py) against the
session's daphne process on PostgreSQL and Redis, and publishes over REST or
by saving a tracked model in this process. What is asserted is what the
application's callback receives.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from realtime.auth import token_mint
from realtime.services.tenants import TenantCredentials, row_policy_add
from realtime.tracking import instance_record
from tests.realtime_clients import ClientFactory, ClientProcess, client_factory
from tests.tracked.models import Article

pytestmark = pytest.mark.django_db(transaction=True)

# realtime-js-v2 is what supabase-js speaks too; v1 is older realtime-js.
KINDS = ["python", "realtime-js-v2", "realtime-js-v1", "supabase-js"]
LIVE = "live_updates"


@pytest.fixture
def clients() -> Iterator[ClientFactory]:
    with client_factory() as open_client:
        yield open_client


def binding(
    table: str = LIVE, *, event: str = "*", filter: str | None = None
) -> dict[str, Any]:
    found = {"event": event, "schema": "public", "table": table}
    return found if filter is None else {**found, "filter": filter}


def post(server: Any, key: str, path: str, body: Any) -> dict[str, Any]:
    response = httpx.post(
        f"{server.url}{path}", json=body, headers={"apikey": key}, timeout=10
    )
    assert response.status_code == 201, response.text
    return response.json()


def publish_content(server: Any, key: str, *, site_id: int, slug: str) -> dict:
    """POST /api/live-updates: an INSERT on live_updates; returns the response."""
    event = {
        "site_id": site_id,
        "event_type": "content.published",
        "collection": "posts",
        "slug": slug,
        "item_id": 7,
        "metadata": {"by": "editor"},
    }
    return post(server, key, "/api/live-updates", event)


def publish_change(server: Any, key: str, **change: Any) -> dict:
    """POST /api/changes with one change; returns its output."""
    return post(server, key, "/api/changes", change)["changes"][0]


# --- Reading what a client received --------------------------------------------


def is_change(event: dict) -> bool:
    return event["event"] == "postgres_changes"


def is_python(event: dict) -> bool:
    return "data" in event["payload"]  # the raw payload; JS callbacks get new/old


def change_type(event: dict) -> str:
    payload = event["payload"]
    return payload["data"]["type"] if is_python(event) else payload["eventType"]


def change_row(event: dict) -> dict:
    """The row a delivered change is about: the new record, else the old one."""
    payload = event["payload"]
    if is_python(event):
        return payload["data"].get("record") or payload["data"].get("old_record") or {}
    return payload["new"] or payload["old"]


def row_is(**values: Any):
    """A delivered change about a row with these values."""
    return lambda e: (
        is_change(e) and all(change_row(e).get(k) == v for k, v in values.items())
    )


def wire_changes(client: ClientProcess) -> list[dict]:
    """The `data` of each postgres_changes frame, as read off the socket.

    Neither library hands `seq` to the callback (JS rebuilds the payload, the
    Python models drop unknown keys), so it is checked on the frames the
    drivers log.
    """
    if client.kind == "python":
        frames = [json.loads(e["raw"]) for e in client.matching(is_frame)]
        return [
            f["payload"]["data"] for f in frames if f["event"] == "postgres_changes"
        ]
    return [e["data"]["data"] for e in client.matching(is_js_change_frame)]


def is_frame(event: dict) -> bool:
    return event["event"] == "frame" and isinstance(event["raw"], str)


def is_js_change_frame(event: dict) -> bool:
    return (
        event["event"] == "log"
        and event["kind"] == "receive"
        and " postgres_changes" in event["msg"]
    )


def assert_change(
    event: dict,
    *,
    event_type: str,
    table: str,
    commit_timestamp: str,
    record: dict | None,
    old_record: dict | None,
    js_values: Callable[[dict], dict] = lambda row: row,
) -> None:
    """The callback got exactly what Supabase would hand it for this change."""
    payload = event["payload"]
    if is_python(event):
        assert set(payload) == {"ids", "data"}
        assert payload["ids"] and all(type(i) is int for i in payload["ids"])
        data = payload["data"]
        assert data["schema"] == "public"
        assert data["table"] == table
        assert data["type"] == event_type
        assert data["commit_timestamp"] == commit_timestamp
        assert data["errors"] is None
        names = [c["name"] for c in data["columns"]]
        assert set(record or old_record or {}) <= set(names)
        assert data.get("record") == record
        assert data.get("old_record") == old_record
    else:
        assert payload == {
            "schema": "public",
            "table": table,
            "commit_timestamp": commit_timestamp,
            "eventType": event_type,
            "new": js_values(record) if record else {},
            "old": js_values(old_record) if old_record else {},
            "errors": None,
        }


def assert_no_client_trouble(client: ClientProcess) -> None:
    """The library neither threw nor dropped a frame it could not parse."""
    client.assert_no(lambda e: e["event"] in {"exception", "error"})
    client.assert_no(
        lambda e: e["event"] == "log" and "Unrecognized message" in e.get("msg", "")
    )


# --- Delivery through a filter ------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_live_updates_arrive_through_the_filter(
    kind: str, clients: ClientFactory, herald_server: Any, tenant: TenantCredentials
) -> None:
    row_policy_add(tenant=tenant.tenant, table=LIVE, role="anon", rules=[])
    client = clients(kind, herald_server, apikey=tenant.publishable_key)
    client.subscribe("site-1", [binding(filter="site_id=eq.1")])
    secret = tenant.secret_key

    other_site = publish_content(herald_server, secret, site_id=2, slug="other")
    created = publish_content(herald_server, secret, site_id=1, slug="hello")
    record = created["record"]
    insert = client.change(row_is(slug="hello"))
    assert_change(
        insert,
        event_type="INSERT",
        table=LIVE,
        commit_timestamp=created["commit_timestamp"],
        record=record,
        old_record=None,
    )

    updated_record = {**record, "slug": "hello-again"}
    updated = publish_change(
        herald_server,
        secret,
        table=LIVE,
        type="UPDATE",
        record=updated_record,
        old_record=record,
    )
    update = client.change(row_is(slug="hello-again"))
    assert_change(
        update,
        event_type="UPDATE",
        table=LIVE,
        commit_timestamp=updated["commit_timestamp"],
        record=updated_record,
        old_record=record,
    )

    deleted = publish_change(
        herald_server, secret, table=LIVE, type="DELETE", old_record=updated_record
    )
    delete = client.change(lambda e: change_type(e) == "DELETE")
    assert_change(
        delete,
        event_type="DELETE",
        table=LIVE,
        commit_timestamp=deleted["commit_timestamp"],
        record=None,
        old_record=updated_record,
    )

    # Site 2's change was published first: had it passed the filter, it would
    # have come before everything above.
    client.assert_no(row_is(site_id=other_site["record"]["site_id"]))
    assert [e["binding"] for e in client.matching(is_change)] == [0, 0, 0]
    seqs = [data.get("seq") for data in wire_changes(client)]
    assert seqs == [created["seq"], updated["seq"], deleted["seq"]]
    assert seqs == sorted(seqs)
    assert_no_client_trouble(client)


@pytest.mark.parametrize("kind", KINDS)
def test_tracked_model_changes_reach_each_event_binding(
    kind: str, clients: ClientFactory, herald_server: Any, tenant: TenantCredentials
) -> None:
    row_policy_add(tenant=tenant.tenant, table="articles", role="anon", rules=[])
    client = clients(kind, herald_server, apikey=tenant.publishable_key)
    events = ["INSERT", "UPDATE", "DELETE"]
    bindings = [
        binding("articles", event=event, filter="site_id=eq.1") for event in events
    ]
    client.subscribe("articles-1", bindings)

    Article.objects.create(tenant=tenant.tenant, site_id=2, title="elsewhere")
    article = Article.objects.create(
        tenant=tenant.tenant, site_id=1, title="Hello", price=Decimal("12.50")
    )
    inserted = instance_record(article)
    insert = client.change(row_is(title="Hello"))

    before = inserted
    article.title, article.published = "Hello again", True
    article.save()
    updated = instance_record(article)
    update = client.change(row_is(title="Hello again"))

    article.delete()
    delete = client.change(lambda e: change_type(e) == "DELETE")

    for got, event_type, record, old in [
        (insert, "INSERT", inserted, None),
        (update, "UPDATE", updated, before),
        (delete, "DELETE", None, updated),
    ]:
        assert got["binding"] == events.index(event_type), got
        assert_change(
            got,
            event_type=event_type,
            table="articles",
            commit_timestamp=got_timestamp(got),
            record=record,
            old_record=old,
            # realtime-js converts values by column type: numeric becomes a number.
            js_values=lambda row: {**row, "price": float(row["price"])},
        )
    assert len(client.matching(is_change)) == 3  # one callback per change
    client.assert_no(row_is(title="elsewhere"))
    assert_no_client_trouble(client)


def got_timestamp(event: dict) -> str:
    payload = event["payload"]
    return (payload["data"] if is_python(event) else payload)["commit_timestamp"]


# --- Row policies and tenants -------------------------------------------------------


def site_token(creds: TenantCredentials, site_id: int) -> str:
    return token_mint(
        tenant=creds.tenant,
        role="authenticated",
        sub=f"user-{site_id}",
        claims={"site_id": site_id},
        ttl=600,
    )


def site_policy(creds: TenantCredentials) -> None:
    row_policy_add(
        tenant=creds.tenant,
        table=LIVE,
        role="authenticated",
        rules=[{"column": "site_id", "claim": "site_id"}],
    )


@pytest.mark.parametrize("kind", KINDS)
def test_row_policy_and_tenant_isolation(
    kind: str, clients: ClientFactory, herald_server: Any, make_tenant: Any
) -> None:
    a, b = make_tenant("Tenant A"), make_tenant("Tenant B")
    site_policy(a)
    site_policy(b)
    user = clients(
        kind, herald_server, apikey=a.publishable_key, token=site_token(a, 1)
    )
    service = clients(kind, herald_server, apikey=a.secret_key)
    neighbour = clients(
        kind, herald_server, apikey=b.publishable_key, token=site_token(b, 1)
    )
    user.subscribe("own", [binding(filter="site_id=eq.1")])
    user.subscribe("theirs", [binding(filter="site_id=eq.2")])
    user.subscribe("all", [binding()])
    service.subscribe("all", [binding()])
    neighbour.subscribe("all", [binding()])

    a_site2 = publish_content(herald_server, a.secret_key, site_id=2, slug="a-site-2")
    b_site1 = publish_content(herald_server, b.secret_key, site_id=1, slug="b-site-1")
    a_site1 = publish_content(herald_server, a.secret_key, site_id=1, slug="a-site-1")
    b_last = publish_content(herald_server, b.secret_key, site_id=1, slug="b-last")

    # The last change is the marker: anything the user should not see was
    # published before it, so it would have arrived before it.
    for topic in ["own", "all"]:
        user.change(lambda e, t=topic: e["topic"] == t and row_is(slug="a-site-1")(e))
    user.assert_no(lambda e: is_change(e) and e["topic"] == "theirs")
    user.assert_no(lambda e: is_change(e) and change_row(e)["slug"] != "a-site-1")

    service.change(row_is(slug="a-site-2"))
    service.change(row_is(slug="a-site-1"))
    service.assert_no(lambda e: is_change(e) and change_row(e)["slug"] == "b-site-1")

    neighbour.change(row_is(slug="b-site-1"))
    neighbour.change(row_is(slug="b-last"))
    neighbour.assert_no(
        lambda e: is_change(e) and change_row(e)["slug"] not in {"b-site-1", "b-last"}
    )
    assert a_site2["seq"] < b_site1["seq"] < a_site1["seq"] < b_last["seq"]
    for client in (user, service, neighbour):
        assert_no_client_trouble(client)


def test_join_without_access_token_falls_back_to_the_apikey(
    clients: ClientFactory, herald_server: Any, tenant: TenantCredentials
) -> None:
    """supabase-js joins first with no token; realtime-js without setAuth too.

    The realtime-js client's apikey is a user token (with `ref`): its claims,
    not just its tenant, must decide what the channel sees.
    """
    row_policy_add(tenant=tenant.tenant, table=LIVE, role="anon", rules=[])
    site_policy(tenant)
    anon = clients("supabase-js", herald_server, apikey=tenant.publishable_key)
    user = clients("realtime-js", herald_server, apikey=site_token(tenant, 1))
    anon.subscribe("all", [binding()])
    user.subscribe("all", [binding()])
    for client in (anon, user):
        join = client.wait_for(is_join_push)
        assert "access_token" not in join["data"], join  # what this test relies on

    publish_content(herald_server, tenant.secret_key, site_id=2, slug="site-2")
    publish_content(herald_server, tenant.secret_key, site_id=1, slug="site-1")
    anon.change(row_is(slug="site-2"))
    anon.change(row_is(slug="site-1"))
    user.change(row_is(slug="site-1"))
    user.assert_no(row_is(slug="site-2"))


def is_join_push(event: dict) -> bool:
    return (
        event["event"] == "log"
        and event["kind"] == "push"
        and " phx_join " in f"{event['msg']} "
    )


@pytest.mark.parametrize("kind", KINDS)
def test_expired_token_is_refused_at_join(
    kind: str, clients: ClientFactory, herald_server: Any, tenant: TenantCredentials
) -> None:
    site_policy(tenant)
    expired = token_mint(
        tenant=tenant.tenant,
        role="authenticated",
        sub="user-1",
        claims={"site_id": 1},
        ttl=-30,
    )
    client = clients(kind, herald_server, apikey=tenant.publishable_key, token=expired)
    status = client.subscribe("site-1", [binding()], expect="CHANNEL_ERROR")
    assert "InvalidJWTToken: Token has expired" in status["error"]

    # The socket itself stays usable: a valid join on it still works.
    client.send("set_auth", token=site_token(tenant, 1))
    client.subscribe("site-1-again", [binding(filter="site_id=eq.1")])
    publish_content(herald_server, tenant.secret_key, site_id=1, slug="after")
    client.change(lambda e: e["topic"] == "site-1-again" and row_is(slug="after")(e))
