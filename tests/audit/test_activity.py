"""The activity log: each event written once by what causes it, none by delivery."""

import time
from collections import Counter

import httpx
import pytest

from audit.models import ActivityLog, EventType
from realtime.auth import token_mint
from realtime.models import ApiKey
from realtime.services.changes import ChangeInput, live_updates_record
from realtime.services.policies import channel_policy_add
from realtime.services.tenants import api_key_revoke, tenant_suspend
from subscriptions.models import Subscription
from subscriptions.services import subscription_disconnect
from tests.wire import Socket

pytestmark = pytest.mark.django_db(transaction=True)

ALL = [{"event": "*", "schema": "public", "table": "orders"}]


def events(tenant):
    rows = ActivityLog.objects.filter(tenant=tenant.tenant)
    return Counter(EventType(t).name for t in rows.values_list("event_type", flat=True))


def settle(tenant, event, count=1, timeout=10.0):
    """Wait for a server process to write what a closed socket leaves behind."""
    deadline = time.monotonic() + timeout
    while events(tenant)[event] < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return events(tenant)


def test_a_sockets_life_is_written_once_per_event_and_never_per_delivery(
    tenant, herald_server
):
    before = events(tenant)
    assert before == Counter(TENANT_CREATED=1, KEY_CREATED=2)
    ws = Socket(herald_server.ws_url, tenant.secret_key)
    ws.join("shop", bindings=ALL)
    changes = [
        ChangeInput(table="orders", type="INSERT", record={"id": i}) for i in range(30)
    ]
    live_updates_record(tenant=tenant.tenant, changes=changes)
    ws.changes(30)
    ref = ws.push("realtime:shop", "phx_leave", {}, join_ref=ws.join_ref)
    ws.reply_to(ref)
    ws.close()
    after = settle(tenant, "DISCONNECT") - before
    assert after == Counter(CONNECT=1, JOIN=1, LEAVE=1, DISCONNECT=1)
    log = ActivityLog.objects.get(tenant=tenant.tenant, event_type=EventType.JOIN)
    assert (log.target, log.role, log.ip) == (
        "realtime:shop",
        "service_role",
        "127.0.0.1",
    )


def test_refusals_are_written(tenant, make_tenant, herald_server):
    other = make_tenant("Other")
    ws = Socket(herald_server.ws_url, tenant.publishable_key)
    ws.join("secret", private=True)
    expired = token_mint(tenant=tenant.tenant, role="authenticated", ttl=-5)
    ws.join("a", token=expired)
    foreign = token_mint(tenant=other.tenant, role="authenticated", ttl=60)
    ws.join("b", token=foreign)
    ws.close()
    found = settle(tenant, "DISCONNECT")
    assert found["JOIN_REFUSED"] == 1
    assert found["TOKEN_EXPIRED"] == 1 and found["TOKEN_REFUSED"] == 1
    assert found["JOIN"] == 0


def test_operator_and_backend_actions_are_written(tenant, herald_server):
    base = events(tenant)
    headers = {"apikey": tenant.secret_key}
    changes = [{"table": "t", "type": "INSERT", "record": {"id": i}} for i in range(3)]
    assert (
        httpx.post(
            f"{herald_server.url}/api/changes", headers=headers, json=changes
        ).status_code
        == 201
    )
    assert (
        httpx.post(
            f"{herald_server.url}/realtime/v1/api/broadcast",
            headers=headers,
            json={"messages": [{"topic": "r", "event": "e"}]},
        ).status_code
        == 202
    )
    channel_policy_add(tenant=tenant.tenant, pattern="r", read=True)
    ws = Socket(herald_server.ws_url, tenant.secret_key)
    ws.join("room")
    subscription_disconnect(
        subscription=Subscription.objects.get(tenant=tenant.tenant, state="active"),
        actor="staff:ops",
    )
    ws.recv_until(lambda f: f["event"] == "phx_close")
    api_key_revoke(key=ApiKey.objects.get(tenant=tenant.tenant, kind="publishable"))
    tenant_suspend(tenant=tenant.tenant, actor="staff:ops")
    found = settle(tenant, "DISCONNECT") - base
    assert found["PUBLISH"] == 1 and found["REST_BROADCAST"] == 1
    assert found["POLICY_CHANGED"] == 1 and found["ADMIN_DISCONNECT"] == 1
    assert found["KEY_REVOKED"] == 1 and found["TENANT_SUSPENDED"] == 1
    suspended = ActivityLog.objects.get(event_type=EventType.TENANT_SUSPENDED)
    assert suspended.actor == "staff:ops"


def test_rate_limits_are_written_once_per_burst(tenant, herald_server):
    tenant.tenant.max_joins_per_second = 1
    tenant.tenant.save()
    ws = Socket(herald_server.ws_url, tenant.secret_key)
    for i in range(6):
        ws.push(f"realtime:r{i}", "phx_join", {"config": {}})
    ws.recv_until(
        lambda f: (
            f["payload"].get("response", {})
            == {"reason": "ClientJoinRateLimitReached: Too many joins per second"}
        )
    )
    ws.close()
    assert settle(tenant, "DISCONNECT")["RATE_LIMITED"] == 1
