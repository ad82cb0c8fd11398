"""The PostgREST filter operators through real clients, on INSERT, UPDATE and DELETE.

Each operator alone, negated and combined, as a channel of one client; the
same five changes are published over REST and every channel must get exactly
the ones its filter admits (a DELETE is judged by its old row, an UPDATE by
its new one). The operators' edge cases are unit-tested in test_filters.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from realtime.services.tenants import TenantCredentials, row_policy_add
from tests.realtime_clients import ClientFactory, client_factory

pytestmark = pytest.mark.django_db(transaction=True)

TABLE = "posts"
ROW_1 = {"id": 1, "title": "Big news today", "deleted_at": None, "status": "draft"}
ROW_2 = {
    "id": 2,
    "title": "small NEWS",
    "deleted_at": "2026-01-01T00:00:00+00:00",
    "status": "live",
}
ROW_3 = {"id": 3, "title": "bigger things", "deleted_at": None, "status": None}
ROW_1_LATER = {**ROW_1, "title": "Big quiet day", "status": "live"}
# (type, id) of the changes published, in order.
CHANGES = [
    ("INSERT", ROW_1, None),
    ("INSERT", ROW_2, None),
    ("INSERT", ROW_3, None),
    ("UPDATE", ROW_1_LATER, ROW_1),
    ("DELETE", None, ROW_2),
]
I1, I2, I3, U1, D2 = [
    ("INSERT", 1),
    ("INSERT", 2),
    ("INSERT", 3),
    ("UPDATE", 1),
    ("DELETE", 2),
]
EXPECTED = {
    "like": ("title=like.*news*", [I1]),
    "ilike": ("title=ilike.%NEWS%", [I1, I2, D2]),
    "is-null": ("deleted_at=is.null", [I1, I3, U1]),
    "not-is-null": ("deleted_at=not.is.null", [I2, D2]),
    "match": ("title=match.^Big", [I1, U1]),
    "imatch": ("title=imatch.^big", [I1, I3, U1]),
    "isdistinct": ("status=isdistinct.draft", [I2, I3, U1, D2]),
    "not-eq": ("id=not.eq.2", [I1, I3, U1]),
    "not-like": ("title=not.like.*news*", [I2, I3, U1, D2]),
    "combined": ("title=ilike.*news*,deleted_at=is.null", [I1]),
    "with-in": ("id=in.(1,2),title=not.imatch.quiet", [I1, I2, D2]),
}


@pytest.fixture
def clients() -> Iterator[ClientFactory]:
    with client_factory() as open_client:
        yield open_client


def publish(server: Any, key: str, **change: Any) -> None:
    response = httpx.post(
        f"{server.url}/api/changes", json=change, headers={"apikey": key}, timeout=10
    )
    assert response.status_code == 201, response.text


def seen(event: dict[str, Any]) -> tuple[str, int]:
    """(type, id) of a postgres_changes callback, whichever client gave it."""
    payload = event["payload"]
    if "data" in payload:  # Python: the raw payload
        data = payload["data"]
        row = data.get("record") or data.get("old_record")
        return data["type"], row["id"]
    row = payload["new"] or payload["old"]
    return payload["eventType"], row["id"]


def on(topic: str) -> Any:
    return lambda e: e["event"] == "postgres_changes" and e["topic"] == topic


@pytest.mark.parametrize("kind", ["python", "realtime-js-v2", "supabase-js"])
def test_each_operator_alone_negated_and_combined(
    kind: str, clients: ClientFactory, herald_server: Any, tenant: TenantCredentials
) -> None:
    row_policy_add(tenant=tenant.tenant, table=TABLE, role="anon", rules=[])
    client = clients(kind, herald_server, apikey=tenant.publishable_key)
    binding = {"event": "*", "schema": "public", "table": TABLE}
    for name, (text, _) in EXPECTED.items():
        client.subscribe(name, [{**binding, "filter": text}])
    client.subscribe("everything", [binding])

    for change_type, record, old_record in CHANGES:
        change: dict[str, Any] = {"table": TABLE, "type": change_type}
        if record is not None:
            change["record"] = record
        if old_record is not None:
            change["old_record"] = old_record
        publish(herald_server, tenant.secret_key, **change)
    client.wait_for(lambda e: on("everything")(e) and seen(e) == D2)
    for name, (_, expected) in EXPECTED.items():
        last = expected[-1]
        client.wait_for(lambda e, n=name, x=last: on(n)(e) and seen(e) == x)
    for name, (_, expected) in EXPECTED.items():
        assert [seen(e) for e in client.matching(on(name))] == expected, name
    client.assert_no(lambda e: e["event"] in {"exception", "error"})


def test_a_hostile_regular_expression_does_not_hold_up_other_sockets(
    clients: ClientFactory, herald_server: Any, tenant: TenantCredentials
) -> None:
    """`(a+)+$` against 'aaaa…b' backtracks for ages in Python's re; RE2 is linear."""
    row_policy_add(tenant=tenant.tenant, table=TABLE, role="anon", rules=[])
    hostile = clients("python", herald_server, apikey=tenant.publishable_key)
    bystander = clients("supabase-js", herald_server, apikey=tenant.publishable_key)
    binding = {"event": "*", "schema": "public", "table": TABLE}
    hostile.subscribe("evil", [{**binding, "filter": "title=match.(a+)+$"}])
    bystander.subscribe("plain", [{**binding, "filter": "id=eq.7"}])
    record = {"id": 7, "title": "a" * 4000 + "b"}
    publish(herald_server, tenant.secret_key, table=TABLE, type="INSERT", record=record)
    bystander.wait_for(lambda e: on("plain")(e) and seen(e) == ("INSERT", 7))
    hostile.assert_no(on("evil"))
