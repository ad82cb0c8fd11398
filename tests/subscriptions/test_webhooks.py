"""Webhook delivery by the maintenance worker, to a real HTTP receiver on loopback."""

import hashlib
import hmac
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import User

from subscriptions.models import DurableSubscription
from tests.server import ROOT
from tests.subscriptions.support import (
    KEPT_OLD,
    MOVED_OLD,
    SECRET,
    form_channel,
    publish,
    publish_updates,
    run_worker,
    run_worker_until,
    subscribe,
    supplier_token,
)

pytestmark = pytest.mark.django_db(transaction=True)


def verify(secret: str, header: str, body: bytes, tolerance: int = 300) -> bool:
    """The receiver's check, as the README shows it."""
    parts = dict(part.split("=", 1) for part in header.split(","))
    timestamp, signature = int(parts["t"]), parts["v1"]
    signed = f"{timestamp}.".encode() + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    fresh = abs(time.time() - timestamp) <= tolerance
    return hmac.compare_digest(expected, signature) and fresh


def webhook_subscribe(api, creds, url, supplier="s-1"):
    body = {
        "channels": ["form-responses"],
        "filters": {"supplier_id": supplier},
        "webhook": {"url": url, "secret": SECRET},
    }
    response = subscribe(api, creds, body, token=supplier_token(creds, supplier))
    assert response.status_code == 200, response.content
    return response.json()["subscriptions"][0]


def test_changes_arrive_in_order_signed_and_identified(
    api, form_responses, receiver, webhook_settings
):
    tenant = form_responses
    hook = receiver()
    sub = webhook_subscribe(api, tenant, hook.url)
    assert sub["delivery"] == "webhook" and sub["status"] == "active"
    wanted = [publish(tenant, "form_responses", id=1, supplier_id="s-1")]
    publish(tenant, "form_responses", id=2, supplier_id="s-2")  # not theirs
    publish(tenant, "orders", id=3, supplier_id="s-1")  # another table
    wanted.append(
        publish(tenant, "form_responses", "UPDATE", id=1, supplier_id="s-1", n=2)
    )
    wanted.append(publish(tenant, "form_responses", "DELETE", id=1, supplier_id="s-1"))

    run_worker_until(lambda: len(hook.received) >= 3)
    run_worker()  # nothing more to send

    assert hook.seqs == wanted
    for delivery in hook.received:
        body = delivery.json
        seq = body["change"]["seq"]
        assert verify(SECRET, delivery.headers["Herald-Signature"], delivery.body)
        assert not verify(
            "another-secret-xxxx", delivery.headers["Herald-Signature"], delivery.body
        )
        assert delivery.headers["Herald-Delivery-Id"] == f"{sub['id']}-{seq}"
        assert body["id"] == f"{sub['id']}-{seq}"
        assert (body["subscription"], body["channel"]) == (sub["id"], "form-responses")
        assert delivery.headers["Content-Type"] == "application/json"
    assert [d.json["change"]["type"] for d in hook.received] == [
        "INSERT",
        "UPDATE",
        "DELETE",
    ]
    row = DurableSubscription.objects.get(pk=sub["id"])
    assert row.delivered_count == 3 and row.cursor >= wanted[-1]


def test_a_webhook_gets_an_updates_old_row_only_if_its_subscriber_may_see_it(
    api, form_responses, receiver, webhook_settings
):
    """s-1's receiver gets a response moved from s-2 with the old row cut to
    its id; s-2's gets nothing of it; the secret key's gets the old row whole."""
    tenant = form_responses
    hooks = {who: receiver() for who in ("s-1", "s-2", "service")}
    webhook_subscribe(api, tenant, hooks["s-1"].url)
    for who, token in [
        ("s-2", supplier_token(tenant, "s-2", "user-2")),
        ("service", None),
    ]:
        body = {
            "channels": [{"table": "form_responses"}],
            "webhook": {"url": hooks[who].url, "secret": SECRET},
        }
        assert subscribe(api, tenant, body, token=token).status_code == 200
    moved, kept = publish_updates(tenant)
    marker = publish(tenant, "form_responses", id=3, supplier_id="s-2")

    run_worker_until(
        lambda: (
            len(hooks["s-1"].received) >= 2
            and len(hooks["s-2"].received) >= 1
            and len(hooks["service"].received) >= 3
        )
    )

    assert not any(b"secret" in d.body for d in hooks["s-1"].received)
    changes = [d.json["change"] for d in hooks["s-1"].received]
    assert [(c["seq"], c["old_record"]) for c in changes] == [
        (moved, {"id": 1}),
        (kept, KEPT_OLD),
    ]
    assert hooks["s-2"].seqs == [marker]  # the UPDATEs were to s-1 rows
    changes = [d.json["change"] for d in hooks["service"].received]
    assert [c.get("old_record") for c in changes] == [MOVED_OLD, KEPT_OLD, None]


def test_a_receiver_failing_three_times_gets_every_change_once_it_recovers(
    api, form_responses, receiver, webhook_settings
):
    tenant = form_responses
    hook = receiver(fail_first=3)
    sub = webhook_subscribe(api, tenant, hook.url)
    wanted = [
        publish(tenant, "form_responses", id=i, supplier_id="s-1") for i in range(3)
    ]

    run_worker()
    row = DurableSubscription.objects.get(pk=sub["id"])
    assert (row.failure_count, row.state) == (1, "active")
    assert row.last_error == "HTTP 500 from the receiver"
    assert row.next_attempt_at is not None and row.cursor < wanted[0]

    # More changes while the receiver is down: none may be lost.
    wanted += [publish(tenant, "form_responses", id=9, supplier_id="s-1")]
    run_worker_until(lambda: len(hook.received) >= 4)
    time.sleep(0.05)
    run_worker()

    assert hook.attempts == 3 + 4  # each failure stops the batch
    assert hook.seqs == wanted
    ids = [d.headers["Herald-Delivery-Id"] for d in hook.received]
    assert len(set(ids)) == len(ids)
    row.refresh_from_db()
    assert (row.failure_count, row.last_error, row.state) == (0, "", "active")
    assert row.delivered_count == 4


def test_repeated_failures_pause_the_subscription_visibly(
    api, client, form_responses, receiver, webhook_settings
):
    webhook_settings.HERALD_WEBHOOK_MAX_FAILURES = 3
    tenant = form_responses
    hook = receiver(fail_first=10**6, status=503)
    sub = webhook_subscribe(api, tenant, hook.url)
    wanted = [
        publish(tenant, "form_responses", id=i, supplier_id="s-1") for i in range(2)
    ]

    def paused():
        return DurableSubscription.objects.get(pk=sub["id"]).state == "paused"

    run_worker_until(paused)
    attempts = hook.attempts
    assert attempts == 3
    run_worker()
    assert hook.attempts == attempts  # paused: no more tries

    token = supplier_token(tenant, "s-1")
    status = api.get(
        "/api/realtime/status",
        HTTP_APIKEY=tenant.publishable_key,
        HTTP_AUTHORIZATION=f"Bearer {token}",
    ).json()
    [listed] = status["subscriptions"]
    assert (listed["id"], listed["status"], listed["failure_count"]) == (
        sub["id"],
        "paused",
        3,
    )
    assert listed["last_error"] == "HTTP 503 from the receiver"

    admin = User.objects.create_superuser("ops", "ops@example.com", "pw")
    client.force_login(admin)
    page = client.get("/admin/subscriptions/durablesubscription/")
    assert page.status_code == 200
    assert b"paused (webhook failing)" in page.content
    assert b"HTTP 503 from the receiver" in page.content

    hook.fail_first = 0  # the receiver is fixed; an operator resumes
    resumed = client.post(
        "/admin/subscriptions/durablesubscription/",
        {"action": "resume", "_selected_action": [sub["id"]]},
    )
    assert resumed.status_code == 302
    assert DurableSubscription.objects.get(pk=sub["id"]).state == "active"
    run_worker_until(lambda: len(hook.received) >= 2)
    assert hook.seqs == wanted


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://[::1]:9/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::ffff:127.0.0.1]/hook",
    ],
)
def test_private_targets_are_refused(api, form_responses, url, settings):
    settings.HERALD_WEBHOOK_ALLOW_PRIVATE = False
    body = {
        "channels": ["form-responses"],
        "filters": {"supplier_id": "s-1"},
        "webhook": {"url": url, "secret": SECRET},
    }
    response = subscribe(api, form_responses, body)
    assert response.status_code == 400, response.content
    assert "private" in response.json()["message"]
    assert not DurableSubscription.objects.exists()


def test_a_target_turned_private_is_not_sent_to(
    api, form_responses, receiver, webhook_settings
):
    hook = receiver()
    sub = webhook_subscribe(api, form_responses, hook.url)
    webhook_settings.HERALD_WEBHOOK_ALLOW_PRIVATE = False
    publish(form_responses, "form_responses", id=1, supplier_id="s-1")
    run_worker()
    assert hook.attempts == 0
    row = DurableSubscription.objects.get(pk=sub["id"])
    assert row.failure_count == 1 and "private" in row.last_error


def test_a_name_that_resolves_private_after_the_check_is_not_followed(
    api, form_responses, receiver, webhook_settings, monkeypatch
):
    """DNS rebinding: public to the check, loopback to a second resolution."""
    hook = receiver()
    port = urlsplit(hook.url).port
    real = socket.getaddrinfo
    connects = []

    def rebinding(host, port, *args, **kwargs):
        if host != "rebind.example":
            return real(host, port, *args, **kwargs)
        checked = kwargs.get("proto") == socket.IPPROTO_TCP  # webhook_url_check
        address = "93.184.216.34" if checked else "127.0.0.1"
        if not checked:
            connects.append(address)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    webhook_settings.HERALD_WEBHOOK_ALLOW_PRIVATE = False
    webhook_settings.HERALD_WEBHOOK_TIMEOUT = 1
    sub = webhook_subscribe(api, form_responses, f"http://rebind.example:{port}/hook")
    publish(form_responses, "form_responses", id=1, supplier_id="s-1")
    run_worker()
    assert hook.attempts == 0
    assert connects == []  # the client connected to the checked address
    row = DurableSubscription.objects.get(pk=sub["id"])
    assert row.failure_count == 1 and row.cursor == 0


def test_two_workers_never_send_a_change_twice(
    api, make_tenant, receiver, subprocess_env, webhook_settings
):
    hook = receiver(delay=0.005)
    tenants = [form_channel(make_tenant(f"T{i}")) for i in range(2)]
    subs = [
        webhook_subscribe(api, tenant, hook.url, supplier=supplier)
        for tenant in tenants
        for supplier in ("a", "b")
    ]
    env = {
        **subprocess_env,
        "HERALD_WEBHOOK_ALLOW_PRIVATE": "1",
        "HERALD_WEBHOOK_BATCH": "4",
        "HERALD_MAINTENANCE_INTERVAL": "0.05",
    }
    workers = [
        subprocess.Popen(
            [sys.executable, "manage.py", "realtime_maintenance", "--loop"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        time.sleep(3)  # both workers up and polling before there is work
        for i in range(15):
            for tenant in tenants:
                for supplier in ("a", "b"):
                    publish(tenant, "form_responses", id=i, supplier_id=supplier)
        deadline = time.monotonic() + 60
        while len(hook.received) < 60 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1)  # room for a duplicate to show up
    finally:
        for worker in workers:
            worker.terminate()
        outputs = [worker.communicate(timeout=20) for worker in workers]
    ids = Counter(d.headers["Herald-Delivery-Id"] for d in hook.received)
    assert len(hook.received) == 60, outputs
    assert max(ids.values()) == 1
    for sub in subs:
        seqs = [
            d.json["change"]["seq"]
            for d in hook.received
            if d.json["subscription"] == sub["id"]
        ]
        assert len(seqs) == 15 and seqs == sorted(seqs)
    # Both workers took part: the test did run them side by side.
    sent = [
        sum(int(n) for n in re.findall(r"webhooks=(\d+)", out)) for out, _ in outputs
    ]
    assert sum(sent) == 60 and all(sent), sent
