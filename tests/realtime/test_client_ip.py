"""The client's address behind trusted proxies: limits, /metrics, activity."""

import time
import types

import httpx
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from websockets.sync.client import connect

from audit.models import ActivityLog, EventType
from realtime.client_ip import resolve_client_ip, scope_client_ip, trusted_networks

pytestmark = pytest.mark.django_db(transaction=True)

PROXY = {"REMOTE_ADDR": "127.0.0.1"}


def via_proxy(client_ip):
    return {**PROXY, "HTTP_X_FORWARDED_FOR": f"203.0.113.66, {client_ip}"}


@pytest.fixture
def frozen_rate_clock(monkeypatch):
    now = time.time()
    monkeypatch.setattr(
        "django_ratelimit.core.time", types.SimpleNamespace(time=lambda: now)
    )


@pytest.fixture
def behind_nginx(settings):
    settings.HERALD_TRUSTED_PROXIES = "127.0.0.1, 10.0.0.0/8"


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("127.0.0.1", "198.51.100.7", "198.51.100.7"),
        # From the right: trusted hops skipped, the first untrusted one wins.
        ("127.0.0.1", "1.1.1.1, 198.51.100.7, 10.2.3.4", "198.51.100.7"),
        ("::ffff:127.0.0.1", "198.51.100.7", "198.51.100.7"),
        ("127.0.0.1", "2001:db8::1", "2001:db8::1"),
        # Malformed: the header is worthless, the proxy is the client.
        ("127.0.0.1", "198.51.100.7, not-an-ip", "127.0.0.1"),
        ("127.0.0.1", "198.51.100.7:443", "127.0.0.1"),
        ("127.0.0.1", "", "127.0.0.1"),
        # Every hop a proxy: the leftmost is as far back as anyone can tell.
        ("127.0.0.1", "10.0.0.9, 10.0.0.8", "10.0.0.9"),
        # An untrusted peer's header is the client's own word: ignored.
        ("198.51.100.7", "127.0.0.1", "198.51.100.7"),
        (None, "198.51.100.7", None),
    ],
)
def test_the_client_is_the_first_untrusted_hop(behind_nginx, peer, forwarded, client):
    assert resolve_client_ip(peer, forwarded) == client


def test_by_default_nobody_is_trusted():
    assert resolve_client_ip("127.0.0.1", "198.51.100.7") == "127.0.0.1"


def test_a_mistyped_proxy_list_is_refused():
    with pytest.raises(ImproperlyConfigured, match="HERALD_TRUSTED_PROXIES"):
        trusted_networks("127.0.0.1, nginx.local")


def test_an_asgi_scope_reads_every_forwarded_header(behind_nginx):
    scope = {
        "client": ["127.0.0.1", 5000],
        "headers": [
            (b"x-forwarded-for", b"198.51.100.7"),
            (b"host", b"x"),
            (b"X-Forwarded-For", b"10.1.1.1"),
        ],
    }
    assert scope_client_ip(scope) == "198.51.100.7"
    assert scope_client_ip({"client": None, "headers": []}) is None


def read(api, key, **meta):
    return api.get("/api/live-updates", HTTP_APIKEY=key, **meta)


def test_one_clients_failed_logins_do_not_lock_out_the_others(
    api, tenant, settings, behind_nginx, frozen_rate_clock
):
    settings.HERALD_AUTH_FAILURE_RATE = "2/m"
    attacker = via_proxy("198.51.100.7")
    assert [read(api, "sk_wrong", **attacker).status_code for _ in range(3)] == [
        401,
        401,
        429,
    ]
    assert read(api, tenant.secret_key, **attacker).status_code == 429
    assert read(api, tenant.secret_key, **via_proxy("198.51.100.8")).status_code == 200
    logged = ActivityLog.objects.get(event_type=EventType.RATE_LIMITED)
    assert (logged.actor, logged.ip) == ("ip:198.51.100.7", "198.51.100.7")


def test_a_forged_header_does_not_escape_the_limit(
    api, tenant, settings, behind_nginx, frozen_rate_clock
):
    settings.HERALD_AUTH_FAILURE_RATE = "2/m"
    for n in range(3):  # straight to the server, a new "client" every time
        meta = {"REMOTE_ADDR": "198.51.100.9", "HTTP_X_FORWARDED_FOR": f"1.1.1.{n}"}
        status = read(api, "sk_wrong", **meta).status_code
    assert status == 429


def test_anonymous_clients_behind_the_proxy_have_budgets_of_their_own(
    api, tenant, behind_nginx, frozen_rate_clock
):
    tenant.tenant.rate_limits = {"read": "1/m"}
    tenant.tenant.save()
    key = tenant.publishable_key
    assert read(api, key, **via_proxy("198.51.100.1")).status_code == 200
    assert read(api, key, **via_proxy("198.51.100.1")).status_code == 429
    assert read(api, key, **via_proxy("198.51.100.2")).status_code == 200


def test_the_activity_log_records_the_forwarded_client(api, tenant, behind_nginx):
    response = api.post(
        "/api/changes",
        {"table": "orders", "type": "INSERT", "record": {"id": 1}},
        format="json",
        HTTP_APIKEY=tenant.secret_key,
        **via_proxy("198.51.100.7"),
    )
    assert response.status_code == 201
    assert ActivityLog.objects.get(event_type=EventType.PUBLISH).ip == "198.51.100.7"


def test_metrics_through_the_proxy_are_not_loopback(client, behind_nginx):
    assert client.get("/metrics", **via_proxy("198.51.100.7")).status_code == 403
    assert client.get("/metrics", **PROXY).status_code == 200  # the proxy's own
    with override_settings(HERALD_METRICS_TOKEN="s3cret"):
        allowed = client.get(
            "/metrics",
            HTTP_AUTHORIZATION="Bearer s3cret",
            **via_proxy("198.51.100.7"),
        )
        assert allowed.status_code == 200


def test_a_socket_behind_the_proxy_is_logged_with_its_client(make_tenant, start_server):
    server = start_server(HERALD_TRUSTED_PROXIES="127.0.0.1")
    tenant = make_tenant("Forwarded")
    url = f"{server.ws_url}/realtime/v1/websocket?apikey={tenant.secret_key}&vsn=1.0.0"
    with connect(url, additional_headers={"X-Forwarded-For": "198.51.100.7"}):
        pass
    logged = ActivityLog.objects.filter(
        tenant=tenant.tenant, event_type=EventType.CONNECT
    )
    deadline = time.monotonic() + 5
    while not logged.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert logged.get().ip == "198.51.100.7"
    # And over REST on the same server, end to end.
    forwarded = {"apikey": "sk_wrong", "X-Forwarded-For": "198.51.100.8"}
    assert httpx.get(f"{server.url}/api/live-updates", headers=forwarded).status_code
    refused = ActivityLog.objects.filter(ip="198.51.100.8")
    assert refused.exists()
    server.stop()
