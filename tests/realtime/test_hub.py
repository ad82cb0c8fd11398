"""The fan-out of changes to sockets, as the sockets of a real server see it."""

import httpx
import orjson
import pytest

from realtime.auth import token_mint
from realtime.services.tenants import row_policy_add
from tests.realtime_clients import client_factory

pytestmark = pytest.mark.django_db(transaction=True)

ORDERS = [{"event": "*", "schema": "public", "table": "orders"}]


def site_policy(creds):
    row_policy_add(
        tenant=creds.tenant,
        table="orders",
        role="authenticated",
        rules=[{"column": "site_id", "claim": "site_id"}],
    )


def site_token(creds, site_id):
    return token_mint(
        tenant=creds.tenant,
        role="authenticated",
        sub=f"user-{site_id}",
        claims={"site_id": site_id},
        ttl=300,
    )


def publish(server, creds, type, record, old_record=None):
    body = {"table": "orders", "type": type, "record": record}
    if old_record is not None:
        body["old_record"] = old_record
    response = httpx.post(
        f"{server.url}/api/changes", headers={"apikey": creds.secret_key}, json=body
    )
    assert response.status_code == 201, response.text
    return response.json()["changes"][0]["seq"]


def test_an_updates_old_row_reaches_only_who_may_see_it(tenant, sockets, herald_server):
    """A row moved from site 99 to site 42: site 42 gets the UPDATE with the old
    row cut to its id (what Supabase sends of an old row it may not show),
    site 99 gets nothing, the secret key gets the old row whole. The service
    socket joins first, on the same topic and bindings: the user must not get
    its frame."""
    site_policy(tenant)
    service = sockets(tenant.secret_key)
    service.join("shop", bindings=ORDERS)
    site_42, site_99 = sockets(tenant.publishable_key), sockets(tenant.publishable_key)
    site_42.join("shop", bindings=ORDERS, token=site_token(tenant, 42))
    site_99.join("shop", bindings=ORDERS, token=site_token(tenant, 99))

    moved_old = {"id": 1, "site_id": 99, "title": "secret"}
    moved = publish(
        herald_server,
        tenant,
        "UPDATE",
        {"id": 1, "site_id": 42, "title": "new"},
        moved_old,
    )
    kept_old = {"id": 2, "site_id": 42, "title": "old"}
    kept = publish(
        herald_server,
        tenant,
        "UPDATE",
        {"id": 2, "site_id": 42, "title": "new"},
        kept_old,
    )
    marker = publish(herald_server, tenant, "INSERT", {"id": 3, "site_id": 99})

    first, second = site_42.changes(2)
    assert b"secret" not in orjson.dumps(first["raw"])
    assert [
        (f["payload"]["data"]["seq"], f["payload"]["data"]["old_record"])
        for f in (first, second)
    ] == [(moved, {"id": 1}), (kept, kept_old)]
    assert first["payload"]["data"]["record"] == {
        "id": 1,
        "site_id": 42,
        "title": "new",
    }
    # Everything before the marker would have come before it.
    [only] = site_99.changes(1)
    assert only["payload"]["data"]["seq"] == marker
    olds = [f["payload"]["data"].get("old_record") for f in service.changes(3)]
    assert olds == [moved_old, kept_old, None]


@pytest.mark.parametrize(
    "kind", ["python", "realtime-js-v2", "realtime-js-v1", "supabase-js"]
)
def test_the_official_clients_take_an_old_row_cut_to_its_id(
    kind, tenant, herald_server
):
    """The callback gets the UPDATE, its old row as Supabase sends one it may
    not show: the primary key alone."""
    site_policy(tenant)
    with client_factory() as clients:
        user = clients(
            kind,
            herald_server,
            apikey=tenant.publishable_key,
            token=site_token(tenant, 42),
        )
        user.subscribe("shop", ORDERS)
        publish(
            herald_server,
            tenant,
            "UPDATE",
            {"id": 1, "site_id": 42, "title": "new"},
            {"id": 1, "site_id": 99, "title": "secret"},
        )
        payload = user.change(lambda e: True)["payload"]
    if kind == "python":
        payload = payload["data"]
        new, old = payload["record"], payload["old_record"]
    else:
        new, old = payload["new"], payload["old"]
    assert (new, old) == ({"id": 1, "site_id": 42, "title": "new"}, {"id": 1})
