"""Membership row policies end to end: a user of sites [1, 2] never sees site 3.

Over a real socket (both vsn) and over catch-up (GET /api/live-updates), with
a `--match-any site_id=site_ids` policy made by the management command.
"""

from __future__ import annotations

import pytest
from django.core.management import call_command

from realtime.auth import token_mint
from realtime.services.changes import ChangeInput, live_updates_record
from realtime.services.tenants import TenantCredentials

pytestmark = pytest.mark.django_db(transaction=True)

ORDERS = [{"event": "*", "schema": "public", "table": "orders"}]


def members_of_sites(creds: TenantCredentials) -> None:
    call_command(
        "add_row_policy",
        "--tenant",
        creds.tenant.slug,
        "--table",
        "orders",
        "--role",
        "authenticated",
        "--match-any",
        "site_id=site_ids",
    )


def publish(creds: TenantCredentials, *site_ids: int) -> None:
    changes = [
        ChangeInput(table="orders", type="INSERT", record={"id": n, "site_id": site})
        for n, site in enumerate(site_ids, 1)
    ]
    live_updates_record(tenant=creds.tenant, changes=changes)


def user(creds: TenantCredentials, site_ids: object) -> str:
    return token_mint(
        tenant=creds.tenant,
        role="authenticated",
        sub="u1",
        claims={"site_ids": site_ids},
        ttl=300,
    )


@pytest.mark.parametrize("vsn", ["1.0.0", "2.0.0"])
def test_a_socket_gets_the_sites_of_its_list_claim_only(tenant, sockets, vsn):
    members_of_sites(tenant)
    socket = sockets(tenant.publishable_key, vsn=vsn)
    joined = socket.join("shop", bindings=ORDERS, token=user(tenant, [1, 2]))
    assert joined["payload"]["status"] == "ok"
    publish(tenant, 3, 1, 3, 2, 3)
    got = [f["payload"]["data"]["record"]["site_id"] for f in socket.changes(2)]
    assert got == [1, 2]
    assert socket.quiet(lambda f: f["event"] == "postgres_changes")


def test_two_users_with_different_lists_share_a_topic_without_crossing(tenant, sockets):
    members_of_sites(tenant)
    first, second = sockets(tenant.publishable_key), sockets(tenant.publishable_key)
    first.join("shop", bindings=ORDERS, token=user(tenant, [1, 2]))
    second.join("shop", bindings=ORDERS, token=user(tenant, [2, 3]))
    publish(tenant, 1, 2, 3)
    assert [f["payload"]["data"]["record"]["site_id"] for f in first.changes(2)] == [
        1,
        2,
    ]
    assert [f["payload"]["data"]["record"]["site_id"] for f in second.changes(2)] == [
        2,
        3,
    ]


def test_a_filter_on_a_site_outside_the_list_is_refused_or_empty(tenant, sockets):
    members_of_sites(tenant)
    socket = sockets(tenant.publishable_key)
    site_3 = [{**ORDERS[0], "filter": "site_id=eq.3"}]
    socket.join("shop", bindings=site_3, token=user(tenant, [1, 2]))
    publish(tenant, 3)
    assert socket.quiet(lambda f: f["event"] == "postgres_changes")


@pytest.mark.parametrize("site_ids", [[1, 2], "1", {"any": [1, 2, 3]}])
def test_catch_up_returns_the_sites_of_the_list_claim_only(api, tenant, site_ids):
    members_of_sites(tenant)
    publish(tenant, 1, 2, 3, 1)
    response = api.get(
        "/api/live-updates?since=0",
        HTTP_APIKEY=tenant.publishable_key,
        HTTP_AUTHORIZATION=f"Bearer {user(tenant, site_ids)}",
    )
    assert response.status_code == 200
    seen = [c["record"]["site_id"] for c in response.json()["changes"]]
    assert seen == ([1, 2, 1] if isinstance(site_ids, list) else [])
