"""GET /api/realtime/status: the numbers match what was delivered, socket and REST."""

import time
from datetime import timedelta

import pytest
from django.db.models import Sum
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from subscriptions.models import DurableSubscription, Subscription
from tests.subscriptions.support import (
    SECRET,
    publish,
    run_worker_until,
    subscribe,
    supplier_token,
)
from tests.wire import Socket

pytestmark = pytest.mark.django_db(transaction=True)

FORM = {"channels": ["form-responses"], "filters": {"supplier_id": "s-1"}}
BINDING = [
    {
        "event": "*",
        "schema": "public",
        "table": "form_responses",
        "filter": "supplier_id=eq.s-1",
    }
]


def status(api, creds, token=None):
    headers = {"HTTP_APIKEY": creds.publishable_key}
    if token:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    else:
        headers["HTTP_APIKEY"] = creds.secret_key
    response = api.get("/api/realtime/status", **headers)
    assert response.status_code == 200, response.content
    return response.json()


def socket_deliveries_recorded():
    total = Subscription.objects.aggregate(n=Sum("delivered_count"))["n"]
    return total or 0


def settled_status(api, creds, token):
    for _ in range(20):
        before = socket_deliveries_recorded()
        body = status(api, creds, token)
        if socket_deliveries_recorded() == before:
            return body, before
    raise AssertionError("socket counts kept moving")


def test_status_numbers_match_what_was_delivered(
    api, form_responses, herald_server, receiver, webhook_settings
):
    tenant = form_responses
    token = supplier_token(tenant, "s-1")
    assert status(api, tenant, token) == {
        "connected": False,
        "activeChannels": 0,
        "messageCount": 0,
        "lastMessageAt": None,
        "subscriptions": [],
    }
    hook = receiver()
    polled = subscribe(api, tenant, FORM, token).json()["subscriptions"][0]
    hooked = subscribe(
        api, tenant, {**FORM, "webhook": {"url": hook.url, "secret": SECRET}}, token
    ).json()["subscriptions"][0]
    ws = Socket(herald_server.ws_url, tenant.publishable_key)
    try:
        assert (
            ws.join("forms", bindings=BINDING, token=token)["payload"]["status"] == "ok"
        )
        ws.join("other", bindings=BINDING, token=token)
        live = status(api, tenant, token)
        assert (live["connected"], live["activeChannels"]) == (True, 2)

        for i in range(3):
            publish(tenant, "form_responses", id=i, supplier_id="s-1")
        publish(tenant, "form_responses", id=9, supplier_id="s-2")  # not theirs
        assert len(ws.changes(6)) == 6  # three on each channel
        polled_changes = api.get(
            f"/api/realtime/subscriptions/{polled['id']}/changes",
            HTTP_APIKEY=tenant.publishable_key,
            HTTP_AUTHORIZATION=f"Bearer {token}",
        ).json()["changes"]
        assert len(polled_changes) == 3
        run_worker_until(lambda: len(hook.received) >= 3)

        # A socket row counts its deliveries once its process records them (at
        # the latest when the channel closes): read it settled around the call.
        during, recorded = settled_status(api, tenant, token)
        assert recorded in (0, 3, 6)
        assert during["messageCount"] == 3 + 3 + recorded
        assert {s["id"]: s["delivered_count"] for s in during["subscriptions"]} == {
            polled["id"]: 3,
            hooked["id"]: 3,
        }
    finally:
        ws.close()
    deadline = timezone.now() + timedelta(seconds=10)
    while Subscription.objects.filter(state="active").exists():
        assert timezone.now() < deadline
        time.sleep(0.05)
    after = status(api, tenant, token)
    assert (after["connected"], after["activeChannels"]) == (False, 0)
    assert after["messageCount"] == 3 + 3 + 6
    rows = [*Subscription.objects.all(), *DurableSubscription.objects.all()]
    latest = max(r.last_delivered_at for r in rows)
    assert parse_datetime(after["lastMessageAt"]) == latest
    assert timezone.now() - latest < timedelta(minutes=1)


def test_status_is_per_principal(api, form_responses):
    tenant = form_responses
    subscribe(api, tenant, FORM, supplier_token(tenant, "s-1"))
    other = supplier_token(tenant, "s-2", sub="user-2")
    assert status(api, tenant, other)["subscriptions"] == []
    assert status(api, tenant)["subscriptions"] == []  # the secret key's own
    subscribe(api, tenant, FORM)
    [own] = status(api, tenant)["subscriptions"]
    assert own["channel"] == "form-responses" and own["status"] == "active"


def test_old_deliveries_leave_the_24_hour_count(api, form_responses):
    tenant = form_responses
    token = supplier_token(tenant, "s-1")
    sub_id = subscribe(api, tenant, FORM, token).json()["subscriptions"][0]["id"]
    DurableSubscription.objects.filter(pk=sub_id).update(
        delivered_count=5, last_delivered_at=timezone.now() - timedelta(hours=25)
    )
    body = status(api, tenant, token)
    assert (body["messageCount"], body["lastMessageAt"]) == (0, None)
