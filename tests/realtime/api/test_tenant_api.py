"""The operators' tenant API through Django's test client: who gets in, what it does.

The real-server half (sockets closed by suspend and rotation, schemathesis)
is in test_tenant_api_server.py.
"""

import itertools
import time
import types

import pytest
from rest_framework.test import APIClient

from audit.models import ActivityLog, EventType
from realtime.auth import principal_resolve, token_mint
from realtime.errors import AuthError
from realtime.models import ApiKey, Tenant

pytestmark = pytest.mark.django_db

TOKEN = "op-" + "k3y" * 12
_addresses = itertools.count(1)


def fresh_ip() -> str:
    """A client address no other call used: failure counters are per address."""
    n = next(_addresses)
    return f"10.61.{n // 250}.{n % 250 + 1}"


@pytest.fixture
def ip():
    return fresh_ip()


@pytest.fixture
def on(settings):
    settings.HERALD_OPERATOR_TOKEN = TOKEN


@pytest.fixture
def op(on, ip):
    client = APIClient(REMOTE_ADDR=ip)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    return client


def call(client, method, path, body=None, **extra):
    return getattr(client, method)(path, body, format="json", **extra)


def every_operation(slug="acme", key_id=1):
    base = f"/api/tenants/{slug}"
    return [
        ("get", "/api/tenants", None),
        ("post", "/api/tenants", {"name": "X", "slug": "x"}),
        ("get", base, None),
        ("patch", base, {"max_concurrent_users": 1}),
        ("post", f"{base}/suspend", None),
        ("post", f"{base}/resume", None),
        ("post", f"{base}/rotate-jwt-secret", None),
        ("post", f"{base}/keys", {"kind": "secret"}),
        ("delete", f"{base}/keys/{key_id}", None),
        ("get", f"{base}/health", None),
    ]


def unchanged(tenant: Tenant) -> bool:
    fresh = Tenant.objects.get(pk=tenant.pk)
    return (fresh.is_active, fresh.jwt_secret, fresh.max_concurrent_users) == (
        tenant.is_active,
        tenant.jwt_secret,
        tenant.max_concurrent_users,
    )


# --- Who gets in ---------------------------------------------------------------


def test_unset_token_means_the_api_does_not_exist(settings, tenant, ip):
    settings.HERALD_OPERATOR_TOKEN = ""
    client = APIClient(REMOTE_ADDR=ip)
    nowhere = client.get("/api/no-such-thing").json()
    for method, path, body in every_operation():
        for auth in ({}, {"HTTP_AUTHORIZATION": "Bearer "}, {"HTTP_AUTHORIZATION": ""}):
            response = call(client, method, path, body, **auth)
            assert response.status_code == 404, (method, path)
            assert response.json()["error"] == nowhere["error"] == "not_found"
    assert unchanged(tenant.tenant)
    assert Tenant.objects.count() == 1


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "missing_operator_token"),
        ({"HTTP_AUTHORIZATION": "Bearer wrong"}, 401, "invalid_operator_token"),
        ({"HTTP_AUTHORIZATION": f"Bearer {TOKEN}x"}, 401, "invalid_operator_token"),
        ({"HTTP_AUTHORIZATION": f"Bearer {TOKEN[:-1]}"}, 401, "invalid_operator_token"),
        ({"HTTP_AUTHORIZATION": f"Basic {TOKEN}"}, 401, "missing_operator_token"),
        ({"HTTP_AUTHORIZATION": "Bearer ünïcødé"}, 401, "invalid_operator_token"),
    ],
)
def test_no_token_or_a_wrong_one_is_refused_and_logged(
    on, tenant, ip, headers, status, code
):
    client = APIClient(REMOTE_ADDR=ip)
    for method, path, body in every_operation():
        response = call(client, method, path, body, **headers)
        assert response.status_code == status, (method, path)
        assert response.json()["error"] == code
    assert unchanged(tenant.tenant)
    assert Tenant.objects.count() == 1
    # One row per address and 10 seconds (a flood of refusals is one row).
    logged = ActivityLog.objects.get(event_type=EventType.AUTH_FAILED, ip=ip)
    assert logged.target == "GET /api/tenants"
    assert not ActivityLog.objects.filter(event_type=EventType.OPERATOR_CALL).exists()


def test_a_tenants_own_credentials_are_refused_and_logged(on, tenant):
    service_token = token_mint(tenant=tenant.tenant, role="service_role", ttl=60)
    attempts = [
        {"HTTP_APIKEY": tenant.secret_key},
        {"HTTP_AUTHORIZATION": f"Bearer {tenant.secret_key}"},
        {"HTTP_AUTHORIZATION": f"Bearer {service_token}"},
        # With the operator token, a stray apikey header changes nothing.
        {"HTTP_APIKEY": tenant.secret_key, "HTTP_AUTHORIZATION": f"Bearer {TOKEN}"},
    ]
    for n, headers in enumerate(attempts):
        client = APIClient(REMOTE_ADDR=fresh_ip())
        response = call(client, "post", "/api/tenants/acme/suspend", **headers)
        if n == 3:
            assert response.status_code == 200  # the operator token decides
            continue
        assert response.status_code == 403, headers
        assert response.json()["error"] == "operator_only"
        assert "operator token" in response.json()["message"]
    refusals = ActivityLog.objects.filter(event_type=EventType.AUTH_FAILED)
    assert refusals.count() == 3
    assert {r.target for r in refusals} == {"POST /api/tenants/acme/suspend"}


@pytest.fixture
def frozen_rate_clock(monkeypatch):
    """django-ratelimit counts in fixed windows: keep the test inside one."""
    now = time.time()
    monkeypatch.setattr(
        "django_ratelimit.core.time", types.SimpleNamespace(time=lambda: now)
    )


def test_failures_lock_the_address_out(on, settings, ip, frozen_rate_clock):
    settings.HERALD_AUTH_FAILURE_RATE = "3/m"
    guesser = APIClient(REMOTE_ADDR=ip, HTTP_AUTHORIZATION="Bearer guess")
    assert [guesser.get("/api/tenants").status_code for _ in range(3)] == [401] * 3
    locked = guesser.get("/api/tenants")
    assert locked.status_code == 429 and int(locked["Retry-After"]) >= 1
    # Even the right token waits from that address; another address does not.
    right = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}
    assert APIClient(REMOTE_ADDR=ip).get("/api/tenants", **right).status_code == 429
    other = APIClient(REMOTE_ADDR=fresh_ip())
    assert other.get("/api/tenants", **right).status_code == 200
    limited = ActivityLog.objects.get(event_type=EventType.RATE_LIMITED)
    assert (limited.target, limited.ip) == ("authentication", ip)


# --- Creating and reading --------------------------------------------------------


def test_create_shows_the_keys_once_and_they_work(op, ip):
    created = call(op, "post", "/api/tenants", {"name": "Beta Shop", "slug": "beta"})
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["slug"] == "beta" and body["name"] == "Beta Shop"
    assert body["suspended"] is False
    assert body["publishable_key"].startswith("pk_")
    assert body["secret_key"].startswith("sk_")
    assert principal_resolve(apikey=body["secret_key"]).is_service
    assert principal_resolve(apikey=body["publishable_key"]).role == "anon"
    tenant = Tenant.objects.get(slug="beta")
    assert body["jwt_secret"] == tenant.jwt_secret
    assert sorted(k["kind"] for k in body["keys"]) == ["publishable", "secret"]
    # Never again: not in the tenant, not in the list.
    for path in ("/api/tenants/beta", "/api/tenants"):
        shown = op.get(path).content.decode()
        for secret in ("publishable_key", "secret_key", "jwt_secret"):
            assert body[secret] not in shown
            assert secret not in shown
    written = ActivityLog.objects.filter(tenant=tenant, actor="operator", ip=ip)
    assert sorted(written.values_list("event_type", flat=True)) == sorted(
        [
            EventType.TENANT_CREATED,
            EventType.KEY_CREATED,
            EventType.KEY_CREATED,
            EventType.OPERATOR_CALL,  # the POST
            EventType.OPERATOR_CALL,  # the GET of the tenant
        ]
    )


def test_slug_defaults_to_the_name(op):
    created = call(op, "post", "/api/tenants", {"name": "Gamma Labs"})
    assert created.status_code == 201
    assert created.json()["slug"] == "gamma-labs"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "name: This field is required."),
        ({"slug": "x"}, "name: This field is required."),
        ({"name": ""}, "name: This field may not be blank."),
        ({"name": "A", "slug": "Bad Slug"}, "slug: Lowercase letters"),
        ({"name": "A", "slug": "a" * 64}, "slug: Lowercase letters"),
        ({"name": "A", "slug": "acme"}, "slug: "),  # taken
        ({"name": "!!!"}, "slug: "),  # nothing to derive one from
        ({"name": "A", "jwt_secret": "mine"}, "jwt_secret: Unknown field"),
        ({"name": 5, "slug": ["x"]}, "slug: "),
        ([{"name": "A"}], "Invalid data. Expected a dictionary"),
        ("name=A", "Invalid data. Expected a dictionary"),
    ],
)
def test_create_refuses_a_bad_body_clearly(op, tenant, body, message):
    refused = call(op, "post", "/api/tenants", body)
    assert refused.status_code == 400, refused.content
    assert refused.json()["error"] == "invalid"
    assert refused.json()["message"].startswith(message)
    assert Tenant.objects.count() == 1


def test_malformed_json_is_refused(op):
    refused = op.generic(
        "POST", "/api/tenants", b'{"name": ', content_type="application/json"
    )
    assert refused.status_code == 400
    assert set(refused.json()) == {"error", "message"}
    assert not Tenant.objects.exists()


def test_list_pages_by_slug(op, make_tenant):
    for name in ("c", "a", "b"):
        make_tenant(name)
    first = op.get("/api/tenants", {"limit": 2}).json()
    assert [t["slug"] for t in first["tenants"]] == ["a", "b"]
    rest = op.get("/api/tenants", {"limit": 2, "after": first["next_after"]}).json()
    assert [t["slug"] for t in rest["tenants"]] == ["c"]
    assert rest["next_after"] is None
    assert op.get("/api/tenants", {"limit": 0}).status_code == 400
    assert op.get("/api/tenants", {"limit": 10**6}).status_code == 400


def test_unknown_tenant_or_key_is_404(op, make_tenant):
    make_tenant("a")
    b = make_tenant("b")
    for method, path, body in every_operation(slug="nope"):
        if path == "/api/tenants":
            continue
        response = call(op, method, path, body)
        assert response.status_code == 404, (method, path)
        assert response.json()["message"] == "No tenant with slug 'nope'"
    b_key = ApiKey.objects.filter(tenant=b.tenant).first()
    for key_id in (b_key.pk, 999_999, 10**30):  # another tenant's; none; no bigint
        refused = op.delete(f"/api/tenants/a/keys/{key_id}")
        assert refused.status_code == 404
        assert refused.json()["error"] == "not_found"
    assert principal_resolve(apikey=b.secret_key)  # untouched
    assert op.get("/api/tenants/" + "a" * 300).status_code == 404
    assert op.get("/api/tenants/a%20b").status_code == 404


# --- Changing ----------------------------------------------------------------------


def test_patch_changes_only_what_is_given_and_logs_before_and_after(op, tenant, ip):
    changes = {
        "max_concurrent_users": 7,
        "change_retention_hours": 48,
        "rate_limits": {"publish": "5/s"},
        "name": "Acme Corp",
    }
    updated = call(op, "patch", "/api/tenants/acme", changes)
    assert updated.status_code == 200, updated.content
    assert {k: updated.json()[k] for k in changes} == changes
    fresh = Tenant.objects.get(slug="acme")
    assert (fresh.max_concurrent_users, fresh.change_retention_hours) == (7, 48)
    assert fresh.rate_limits == {"publish": "5/s"}
    assert fresh.max_channels_per_client == 100  # not given, not changed
    row = ActivityLog.objects.get(event_type=EventType.TENANT_UPDATED)
    assert (row.actor, row.ip) == ("operator", ip)
    assert row.details["changed"]["max_concurrent_users"] == [200, 7]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "Nothing to update"),
        ({"max_concurrent_users": -1}, "max_concurrent_users: "),
        ({"max_concurrent_users": "many"}, "max_concurrent_users: "),
        ({"max_concurrent_users": 2**31}, "max_concurrent_users: "),
        ({"change_retention_hours": 10**9}, "change_retention_hours: "),
        ({"rate_limits": {"publish": "fast"}}, "rate_limits: Each limit"),
        ({"rate_limits": {"nosuchscope": "1/s"}}, "rate_limits: Each limit"),
        ({"rate_limits": "5/s"}, "rate_limits: "),
        ({"is_active": False}, "is_active: Unknown field"),
        ({"jwt_secret": "x"}, "jwt_secret: Unknown field"),
        ({"slug": "other"}, "slug: Unknown field"),
        ({"name": ""}, "name: "),
    ],
)
def test_patch_refuses_a_bad_body_and_changes_nothing(op, tenant, body, message):
    before = Tenant.objects.get(slug="acme")
    refused = call(op, "patch", "/api/tenants/acme", body)
    assert refused.status_code == 400, refused.content
    assert refused.json()["message"].startswith(message), refused.json()
    after = Tenant.objects.get(slug="acme")
    assert [getattr(after, f.attname) for f in Tenant._meta.concrete_fields] == [
        getattr(before, f.attname) for f in Tenant._meta.concrete_fields
    ]
    assert not ActivityLog.objects.filter(event_type=EventType.TENANT_UPDATED).exists()


def test_suspend_and_resume_refuse_and_readmit_the_tenants_keys(op, tenant):
    suspended = op.post("/api/tenants/acme/suspend")
    assert suspended.status_code == 200 and suspended.json()["suspended"] is True
    publish = APIClient().post(
        "/api/changes",
        {"table": "t", "type": "INSERT", "record": {}},
        format="json",
        HTTP_APIKEY=tenant.secret_key,
    )
    assert publish.status_code == 403
    assert publish.json()["error"] == "tenant_suspended"
    resumed = op.post("/api/tenants/acme/resume")
    assert resumed.status_code == 200 and resumed.json()["suspended"] is False
    assert principal_resolve(apikey=tenant.secret_key)
    kinds = ActivityLog.objects.filter(actor="operator").values_list(
        "event_type", flat=True
    )
    assert EventType.TENANT_SUSPENDED in kinds and EventType.TENANT_RESUMED in kinds


def test_rotation_refuses_old_tokens_and_signs_with_the_new_secret(op, tenant):
    old = token_mint(tenant=tenant.tenant, role="authenticated", sub="u1", ttl=600)
    rotated = op.post("/api/tenants/acme/rotate-jwt-secret")
    assert rotated.status_code == 200
    secret = rotated.json()["jwt_secret"]
    fresh = Tenant.objects.get(slug="acme")
    assert secret == fresh.jwt_secret != tenant.tenant.jwt_secret
    with pytest.raises(AuthError) as refused:
        principal_resolve(apikey=tenant.publishable_key, bearer=old)
    assert refused.value.code == "invalid_token_signature"
    new = token_mint(tenant=fresh, role="authenticated", sub="u1", ttl=600)
    assert principal_resolve(apikey=tenant.publishable_key, bearer=new).sub == "u1"
    assert secret not in op.get("/api/tenants/acme").content.decode()
    assert ActivityLog.objects.filter(event_type=EventType.JWT_SECRET_ROTATED).exists()


def test_keys_are_created_shown_once_and_revoked(op, tenant):
    created = call(
        op, "post", "/api/tenants/acme/keys", {"kind": "secret", "name": "ci"}
    )
    assert created.status_code == 201, created.content
    key = created.json()
    assert key["key"].startswith("sk_") and key["key"].startswith(key["prefix"])
    assert principal_resolve(apikey=key["key"]).is_service
    listed = op.get("/api/tenants/acme").json()["keys"]
    assert {"id": key["id"], "name": "ci"}.items() <= next(
        k for k in listed if k["id"] == key["id"]
    ).items()
    assert key["key"] not in op.get("/api/tenants/acme").content.decode()
    revoked = op.delete(f"/api/tenants/acme/keys/{key['id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    with pytest.raises(AuthError):
        principal_resolve(apikey=key["key"])
    again = op.delete(f"/api/tenants/acme/keys/{key['id']}")
    assert again.status_code == 409 and "revoked at" in again.json()["message"]
    assert principal_resolve(apikey=tenant.secret_key)  # the others still work
    for bad in ({"kind": "admin"}, {}, {"kind": "secret", "name": "n" * 101}):
        assert call(op, "post", "/api/tenants/acme/keys", bad).status_code == 400


def test_health_of_one_tenant(op, tenant):
    health = op.get("/api/tenants/acme/health")
    assert health.status_code == 200
    body = health.json()
    assert body["slug"] == "acme" and body["healthy"] is True
    assert (body["database"], body["channel_layer"]) == ("ok", "ok")
    assert body["connections"] == 0 and body["channels"] == 0
    assert body["last_activity_at"] is not None  # its creation, at least
    assert body["last_change_at"] is None
    op.post("/api/tenants/acme/suspend")
    after = op.get("/api/tenants/acme/health").json()
    assert after["suspended"] is True and after["healthy"] is False


def test_every_call_leaves_an_activity_row(op, tenant):
    key = ApiKey.objects.filter(tenant=tenant.tenant).first()
    operations = every_operation(key_id=key.pk)
    for method, path, body in operations:
        call(op, method, path, body)
    call(op, "get", "/api/tenants/nope")  # a refused call is a call too
    calls = ActivityLog.objects.filter(event_type=EventType.OPERATOR_CALL)
    assert calls.count() == len(operations) + 1
    targets = set(calls.values_list("target", flat=True))
    assert {f"{m.upper()} {p}" for m, p, _ in operations} <= targets
    assert calls.get(target="GET /api/tenants/nope").details == {"status": 404}
