"""GET /api/activity: a tenant lists its own activity, never another's."""

import pytest

from audit.models import EventType
from realtime.models import ApiKey
from realtime.services.tenants import api_key_revoke

pytestmark = pytest.mark.django_db


def test_a_tenant_lists_its_activity_newest_first_with_paging(api, make_tenant):
    a, b = make_tenant("A"), make_tenant("B")
    api_key_revoke(key=ApiKey.objects.get(tenant=a.tenant, kind="publishable"))
    headers = {"HTTP_APIKEY": a.secret_key}
    first = api.get("/api/activity?limit=2", **headers).json()
    assert [e["event"] for e in first["activity"]] == ["key_revoked", "key_created"]
    rest = api.get(f"/api/activity?before={first['next_before']}", **headers).json()
    assert [e["event"] for e in rest["activity"]] == ["key_created", "tenant_created"]
    assert rest["next_before"] is None
    only = api.get("/api/activity?event=key_revoked", **headers).json()["activity"]
    assert len(only) == 1 and only[0]["target"].startswith("pk_")
    other = api.get("/api/activity", HTTP_APIKEY=b.secret_key).json()["activity"]
    assert EventType.KEY_REVOKED.name.lower() not in {e["event"] for e in other}


def test_publishable_keys_may_not_read_activity(api, tenant):
    response = api.get("/api/activity", HTTP_APIKEY=tenant.publishable_key)
    assert response.status_code == 403
    assert (
        api.get("/api/activity?event=nope", HTTP_APIKEY=tenant.secret_key).status_code
        == 400
    )


def test_refused_rest_credentials_are_written_once_per_burst(api, tenant):
    from audit.models import ActivityLog
    from realtime.services import sockets

    sockets._last_logged.clear()  # earlier tests' refusals in this process
    for _ in range(3):
        assert api.get("/api/activity", HTTP_APIKEY="sk_wrong").status_code == 401
    assert ActivityLog.objects.filter(event_type=EventType.AUTH_FAILED).count() == 1
    expired = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYW5vbiJ9.x"
    api.get(
        "/api/activity",
        HTTP_APIKEY=tenant.publishable_key,
        HTTP_AUTHORIZATION=f"Bearer {expired}",
    )
    assert ActivityLog.objects.filter(event_type=EventType.TOKEN_REFUSED).count() == 1
