"""Revoking a key, suspending a tenant, an admin disconnect: sockets close now."""

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from realtime.models import ApiKey
from realtime.services.tenants import api_key_revoke, tenant_resume, tenant_suspend
from subscriptions.models import Subscription
from subscriptions.services import subscription_disconnect

pytestmark = pytest.mark.django_db(transaction=True)


def system_error(ws):
    return ws.recv_until(lambda f: f["event"] == "system")["payload"]


def closed_code(ws):
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv()
    return closed.value.rcvd.code


def test_revoking_a_key_closes_its_sockets_on_every_process(
    tenant, sockets, start_server
):
    other = start_server()
    here, there = (
        sockets(tenant.publishable_key),
        sockets(tenant.publishable_key, other),
    )
    bystander = sockets(tenant.secret_key)
    for ws in (here, there, bystander):
        ws.join("room")
    api_key_revoke(key=ApiKey.objects.get(tenant=tenant.tenant, kind="publishable"))
    for ws in (here, there):
        assert system_error(ws)["message"] == "Unauthorized: The API key was revoked"
        assert closed_code(ws) == 4001
    assert bystander.join("still-here")["payload"]["status"] == "ok"
    with pytest.raises(InvalidStatus):
        sockets(tenant.publishable_key)


def test_suspending_a_tenant_closes_its_sockets_and_refuses_new_ones(
    make_tenant, sockets
):
    a, b = make_tenant("A"), make_tenant("B")
    ws, other = sockets(a.secret_key), sockets(b.secret_key)
    ws.join("room")
    other.join("room")
    tenant_suspend(tenant=a.tenant)
    assert system_error(ws)["message"] == (
        "RealtimeDisabledForTenant: Realtime was disabled for this tenant"
    )
    assert closed_code(ws) == 4001
    with pytest.raises(InvalidStatus) as refused:
        sockets(a.secret_key)
    assert refused.value.response.status_code == 403
    assert other.join("unaffected")["payload"]["status"] == "ok"
    tenant_resume(tenant=a.tenant)
    assert sockets(a.secret_key).join("back")["payload"]["status"] == "ok"


def test_admin_disconnect_closes_one_channel(tenant, sockets):
    ws = sockets(tenant.secret_key)
    ws.join("one")
    ws.join("two")
    subscription = Subscription.objects.get(topic="realtime:one", state="active")
    subscription_disconnect(subscription=subscription, actor="staff:ops")
    closed = ws.recv_until(lambda f: f["event"] == "phx_close")
    assert closed["topic"] == "realtime:one"
    ref = ws.push(
        "realtime:two",
        "broadcast",
        {"type": "broadcast", "event": "x", "payload": {}},
        join_ref=ws.join_ref,
    )
    assert ws.quiet(
        lambda f: (
            f["event"] == "phx_reply"
            and f["ref"] == ref
            and f["payload"]["status"] == "error"
        )
    )
