"""/metrics: what a Prometheus scrape of a server process shows."""

import re

import httpx
import pytest
from django.test import override_settings

from realtime.services.changes import ChangeInput, live_updates_record
from tests.wire import Socket

pytestmark = pytest.mark.django_db(transaction=True)


def sample(text, name, **labels):
    # prometheus_client writes labels in alphabetical order.
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = rf"^{name}{{{wanted}}} (\S+)$" if labels else rf"^{name} (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_a_scrape_shows_connections_joins_deliveries_and_latency(
    make_tenant, herald_server
):
    # The server lives for the whole run: a slug no other test uses.
    tenant = make_tenant("Metrics Probe")
    slug = tenant.tenant.slug
    ws = Socket(herald_server.ws_url, tenant.secret_key)
    ws.join("shop", bindings=[{"event": "*", "schema": "public", "table": "orders"}])
    changes = [
        ChangeInput(table="orders", type="INSERT", record={"id": i}) for i in range(3)
    ]
    live_updates_record(tenant=tenant.tenant, changes=changes)
    ws.changes(3)
    anon = Socket(herald_server.ws_url, tenant.publishable_key)
    anon.join("private-room", private=True)  # refused: no channel policy
    text = httpx.get(f"{herald_server.url}/metrics").text
    assert sample(text, "herald_connections", tenant=slug) == 2
    assert sample(text, "herald_joins_total", tenant=slug) == 1
    assert sample(text, "herald_deliveries_total", tenant=slug, kind="change") == 3
    assert (
        sample(text, "herald_refusals_total", tenant=slug, reason="Unauthorized") == 1
    )
    assert sample(text, "herald_delivery_latency_seconds_count") >= 1
    ws.close()
    anon.close()


def test_only_loopback_or_the_token_may_scrape(client):
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 403
    assert client.get("/metrics").status_code == 200  # the test client is 127.0.0.1
    with override_settings(HERALD_METRICS_TOKEN="s3cret"):
        assert client.get("/metrics").status_code == 403
        ok = client.get(
            "/metrics", REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION="Bearer s3cret"
        )
        assert ok.status_code == 200 and b"herald_connections" in ok.content
