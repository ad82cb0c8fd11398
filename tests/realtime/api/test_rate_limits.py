"""Rate limits: per principal and scope, per tenant, per IP for failed auth; 429."""

import time
import types

import httpx
import pytest

from audit.models import ActivityLog, EventType
from realtime.auth import token_mint
from realtime.models import Tenant

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def frozen_rate_clock(monkeypatch):
    """django-ratelimit counts in fixed windows: keep the test inside one."""
    now = time.time()
    monkeypatch.setattr(
        "django_ratelimit.core.time", types.SimpleNamespace(time=lambda: now)
    )


def limit(creds, **rates):
    Tenant.objects.filter(pk=creds.tenant.pk).update(rate_limits=rates)


def read(api, key, **headers):
    return api.get("/api/live-updates", HTTP_APIKEY=key, **headers)


def test_a_tenants_limit_answers_429_with_retry_after(api, tenant, frozen_rate_clock):
    limit(tenant, read="3/m")
    assert [read(api, tenant.secret_key).status_code for _ in range(3)] == [200] * 3
    refused = read(api, tenant.secret_key)
    assert refused.status_code == 429
    assert refused.json()["error"] == "rate_limited"
    assert "3/m for read" in refused.json()["message"]
    assert 1 <= int(refused["Retry-After"]) <= 61
    assert read(api, tenant.secret_key).status_code == 429
    logged = ActivityLog.objects.filter(event_type=EventType.RATE_LIMITED)
    assert logged.count() == 1 and logged.get().target == "read"  # once per window


def test_scopes_and_principals_count_separately(api, make_tenant, frozen_rate_clock):
    a, b = make_tenant("A"), make_tenant("B")
    limit(a, read="1/m")
    assert read(api, a.secret_key).status_code == 200
    assert read(api, a.secret_key).status_code == 429
    assert read(api, b.secret_key).status_code == 200  # another tenant
    token = token_mint(tenant=a.tenant, role="authenticated", sub="u1", ttl=60)
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    assert read(api, a.publishable_key, **bearer).status_code == 200  # another user
    publish = api.post(
        "/api/changes",
        {"table": "t", "type": "INSERT", "record": {}},
        format="json",
        HTTP_APIKEY=a.secret_key,
    )
    assert publish.status_code == 201  # another scope


def test_clients_sharing_a_publishable_key_are_counted_per_ip(
    api, tenant, frozen_rate_clock
):
    limit(tenant, read="1/m")
    key = tenant.publishable_key
    assert read(api, key, REMOTE_ADDR="10.0.0.1").status_code == 200
    assert read(api, key, REMOTE_ADDR="10.0.0.1").status_code == 429
    assert read(api, key, REMOTE_ADDR="10.0.0.2").status_code == 200


def test_failed_authentication_is_limited_per_client_ip(
    api, tenant, settings, frozen_rate_clock
):
    settings.HERALD_AUTH_FAILURE_RATE = "3/m"
    bad = {"REMOTE_ADDR": "10.9.9.9"}
    assert [read(api, "sk_wrong", **bad).status_code for _ in range(3)] == [401] * 3
    refused = read(api, "sk_wrong", **bad)
    assert refused.status_code == 429
    assert refused.json()["error"] == "rate_limited"
    assert int(refused["Retry-After"]) >= 1
    # Even a good key waits from that address; other addresses do not.
    assert read(api, tenant.secret_key, **bad).status_code == 429
    assert read(api, tenant.secret_key, REMOTE_ADDR="10.9.9.8").status_code == 200
    logged = ActivityLog.objects.get(event_type=EventType.RATE_LIMITED)
    assert (logged.actor, logged.target) == ("ip:10.9.9.9", "authentication")


def test_every_endpoint_is_limited(api, tenant, frozen_rate_clock):
    limit(
        tenant,
        read="0/m",
        publish="0/m",
        subscribe="0/m",
        tokens="0/m",
        default="0/m",
        broadcast="0/m",
    )
    key = {"HTTP_APIKEY": tenant.secret_key}
    calls = [
        ("get", "/api/live-updates", None),
        ("post", "/api/live-updates", {}),
        ("post", "/api/changes", {}),
        ("post", "/api/tokens", {}),
        ("post", "/api/realtime/subscribe", {}),
        ("post", "/api/realtime/unsubscribe", {}),
        ("get", "/api/realtime/status", None),
        ("get", "/api/realtime/subscriptions/1/changes", None),
        ("post", "/realtime/v1/api/broadcast", {}),
        ("post", "/realtime/v1/api/broadcast/room/events/e", {}),
    ]
    for method, path, body in calls:
        response = getattr(api, method)(path, body, format="json", **key)
        assert response.status_code == 429, (path, response.content)
        assert response["Retry-After"]


def test_a_limit_holds_across_server_processes(make_tenant, start_server):
    """Counters live in Redis: two processes share one budget."""
    creds = make_tenant("Shared")
    limit(creds, read="4/d")  # a day-long window: no edge during the test
    first, second = start_server(), start_server()
    headers = {"apikey": creds.secret_key}
    try:
        statuses = [
            httpx.get(f"{server.url}/api/live-updates", headers=headers).status_code
            for server in (first, second, first, second, first, second)
        ]
    finally:
        first.stop()
        second.stop()
    assert statuses == [200, 200, 200, 200, 429, 429]
