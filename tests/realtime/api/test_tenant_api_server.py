"""The tenant API against real server processes: what sockets notice."""

import time

import httpx
import pytest
from rest_framework.test import APIClient
from websockets.exceptions import ConnectionClosed, InvalidStatus

from audit.models import ActivityLog, EventType
from realtime.auth import token_mint
from realtime.models import Tenant
from realtime.services.tenants import JWT_SECRET_ROTATED_REASON
from tests.conftest import OPERATOR_TOKEN

pytestmark = pytest.mark.django_db(transaction=True)

AUTH = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


def system_error(ws):
    return ws.recv_until(lambda f: f["event"] == "system")["payload"]


def closed_code(ws):
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv()
    return closed.value.rcvd.code


def health_when(server, slug, ready, *, timeout=10.0):
    """The tenant's health once `ready(health)` holds (figures settle shortly)."""
    deadline = time.monotonic() + timeout
    while True:
        health = httpx.get(f"{server.url}/api/tenants/{slug}/health", headers=AUTH)
        assert health.status_code == 200, health.text
        if ready(health.json()) or time.monotonic() > deadline:
            return health.json()
        time.sleep(0.1)


def test_the_api_is_off_without_the_variable(herald_server, tenant):
    for headers in ({}, AUTH, {"apikey": tenant.secret_key}):
        for method, path in (
            ("GET", "/api/tenants"),
            ("POST", "/api/tenants/acme/suspend"),
            ("POST", "/api/tenants/acme/rotate-jwt-secret"),
        ):
            response = httpx.request(method, herald_server.url + path, headers=headers)
            assert response.status_code == 404, (method, path)
            assert response.json()["error"] == "not_found"
    assert Tenant.objects.get(pk=tenant.tenant.pk).is_active


def test_a_tenant_created_over_http_serves_sockets(operator_server, sockets):
    created = httpx.post(
        f"{operator_server.url}/api/tenants",
        json={"name": "Delta", "slug": "delta"},
        headers=AUTH,
    )
    assert created.status_code == 201, created.text
    ws = sockets(created.json()["publishable_key"], operator_server)
    assert ws.join("room")["payload"]["status"] == "ok"
    health = health_when(operator_server, "delta", lambda h: h["connections"] == 1)
    assert health["connections"] == 1 and health["healthy"] is True


def test_a_tenant_key_and_a_wrong_token_are_refused_by_the_server(
    operator_server, tenant
):
    url = f"{operator_server.url}/api/tenants/acme/suspend"
    for headers, status in (
        ({"apikey": tenant.secret_key}, 403),
        ({"Authorization": f"Bearer {tenant.secret_key}"}, 403),
        ({"Authorization": "Bearer not-the-token"}, 401),
        ({}, 401),
    ):
        assert httpx.post(url, headers=headers).status_code == status
    assert Tenant.objects.get(pk=tenant.tenant.pk).is_active
    assert ActivityLog.objects.filter(
        event_type=EventType.AUTH_FAILED, target="POST /api/tenants/acme/suspend"
    ).exists()


def test_suspend_closes_the_tenants_sockets_and_resume_readmits(
    operator_server, sockets, make_tenant
):
    acme, other = make_tenant("Acme"), make_tenant("Other")
    ws = sockets(acme.publishable_key, operator_server)
    bystander = sockets(other.publishable_key, operator_server)
    ws.join("room")
    bystander.join("room")
    health_when(operator_server, "acme", lambda h: h["connections"] == 1)
    suspended = httpx.post(
        f"{operator_server.url}/api/tenants/acme/suspend", headers=AUTH
    )
    assert suspended.status_code == 200 and suspended.json()["suspended"] is True
    assert system_error(ws)["message"] == (
        "RealtimeDisabledForTenant: Realtime was disabled for this tenant"
    )
    assert closed_code(ws) == 4001
    with pytest.raises(InvalidStatus) as refused:
        sockets(acme.publishable_key, operator_server)
    assert refused.value.response.status_code == 403
    publish = httpx.post(
        f"{operator_server.url}/api/changes",
        json={"table": "t", "type": "INSERT", "record": {}},
        headers={"apikey": acme.secret_key},
    )
    assert publish.status_code == 403
    assert publish.json()["error"] == "tenant_suspended"
    assert bystander.join("still-here")["payload"]["status"] == "ok"
    health = health_when(operator_server, "acme", lambda h: h["connections"] == 0)
    assert (health["suspended"], health["healthy"], health["connections"]) == (
        True,
        False,
        0,
    )
    resumed = httpx.post(f"{operator_server.url}/api/tenants/acme/resume", headers=AUTH)
    assert resumed.status_code == 200
    again = sockets(acme.publishable_key, operator_server)
    assert again.join("back")["payload"]["status"] == "ok"


def test_rotation_closes_sockets_and_old_tokens_no_longer_join(
    operator_server, sockets, tenant
):
    old = token_mint(tenant=tenant.tenant, role="authenticated", sub="u1", ttl=600)
    # This socket also leaves the server holding its copy of the tenant (and
    # of its old secret) for the next sockets to share.
    before = sockets(tenant.publishable_key, operator_server)
    assert before.join("room", token=old)["payload"]["status"] == "ok"
    rotated = httpx.post(
        f"{operator_server.url}/api/tenants/acme/rotate-jwt-secret", headers=AUTH
    )
    assert rotated.status_code == 200, rotated.text
    assert system_error(before)["message"] == JWT_SECRET_ROTATED_REASON
    assert closed_code(before) == 4001
    after = sockets(tenant.publishable_key, operator_server)
    refused = after.join("room", token=old)
    assert refused["payload"]["status"] == "error"
    assert refused["payload"]["response"]["reason"].startswith("JwtSignatureError")
    with pytest.raises(InvalidStatus):
        sockets(old, operator_server)  # the old token as the socket's apikey
    fresh = Tenant.objects.get(pk=tenant.tenant.pk)
    assert fresh.jwt_secret == rotated.json()["jwt_secret"]
    new = token_mint(tenant=fresh, role="authenticated", sub="u1", ttl=600)
    assert after.join("room2", token=new)["payload"]["status"] == "ok"


def test_private_only_over_the_api_closes_open_sockets_and_refuses_public_joins(
    sockets, tenant, settings
):
    settings.HERALD_OPERATOR_TOKEN = OPERATOR_TOKEN
    ws = sockets(tenant.publishable_key)
    ws.join("room")
    op = APIClient(HTTP_AUTHORIZATION=f"Bearer {OPERATOR_TOKEN}")
    unrelated = op.patch("/api/tenants/acme", {"name": "Acme 2"}, format="json")
    assert unrelated.status_code == 200
    assert ws.join("still-open")["payload"]["status"] == "ok"
    closing = op.patch("/api/tenants/acme", {"private_only": True}, format="json")
    assert closing.status_code == 200 and closing.json()["private_only"] is True
    assert system_error(ws)["message"] == (
        "Unauthorized: The tenant's settings changed; reconnect"
    )
    assert closed_code(ws) == 4001
    again = sockets(tenant.publishable_key)
    refused = again.join("public-room")
    assert refused["payload"]["status"] == "error"
    assert "PrivateOnly" in refused["payload"]["response"]["reason"]
