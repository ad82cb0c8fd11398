"""Retention deletes exactly what is past it, in batches; catch-up then says gone."""

from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import ActivityLog, EventType
from realtime.models import HeraldMessage, LiveUpdate
from realtime.services.changes import ChangeInput, live_updates_record
from realtime.services.retention import (
    activity_expire,
    live_updates_expire,
    messages_expire,
)

pytestmark = pytest.mark.django_db(transaction=True)


def changes(tenant, n, *, age_hours=0):
    rows = live_updates_record(
        tenant=tenant.tenant,
        changes=[
            ChangeInput(table="t", type="INSERT", record={"n": i}) for i in range(n)
        ],
    )
    then = timezone.now() - timedelta(hours=age_hours)
    LiveUpdate.objects.filter(pk__in=[r.pk for r in rows]).update(commit_timestamp=then)
    return rows


def test_deletes_exactly_what_is_past_retention_in_batches(make_tenant, api):
    tenant, other = make_tenant("A"), make_tenant("B")
    tenant.tenant.change_retention_hours = 24
    tenant.tenant.save()
    old = changes(tenant, 7, age_hours=25)
    kept = changes(tenant, 3, age_hours=23)
    others = changes(other, 4, age_hours=100)  # another tenant, another retention
    assert live_updates_expire(tenant=tenant.tenant, batch=2) == 7
    left = set(LiveUpdate.objects.values_list("pk", flat=True))
    assert left == {r.pk for r in kept} | {r.pk for r in others}
    tenant.tenant.refresh_from_db()
    assert tenant.tenant.changes_pruned_through == old[-1].pk

    headers = {"HTTP_APIKEY": tenant.secret_key}
    gone = api.get("/api/live-updates?since=0", **headers)
    assert gone.status_code == 410 and gone.json()["error"] == "cursor_gone"
    after = api.get(f"/api/live-updates?since={old[-1].pk}", **headers)
    assert after.status_code == 200
    assert [c["seq"] for c in after.json()["changes"]] == [r.pk for r in kept]


def test_nothing_past_retention_deletes_nothing(tenant):
    changes(tenant, 3, age_hours=1)
    assert live_updates_expire(tenant=tenant.tenant) == 0
    assert LiveUpdate.objects.count() == 3


def test_activity_retention(tenant, settings):
    settings.HERALD_ACTIVITY_RETENTION_DAYS = 30
    ActivityLog.objects.update(created_at=timezone.now() - timedelta(days=31))
    fresh = ActivityLog.objects.create(
        event_type=EventType.CONNECT, tenant=tenant.tenant
    )
    assert activity_expire(batch=2) == 3  # the tenant's creation and its two keys
    assert list(ActivityLog.objects.values_list("pk", flat=True)) == [fresh.pk]


def test_broadcasts_from_the_database_expire(tenant, settings):
    settings.HERALD_MESSAGES_RETENTION_HOURS = 1
    for _ in range(3):
        HeraldMessage.objects.create(tenant_slug="acme", topic="t", event="e")
    HeraldMessage.objects.update(created_at=timezone.now() - timedelta(hours=2))
    fresh = HeraldMessage.objects.create(tenant_slug="acme", topic="t", event="e")
    assert messages_expire(batch=2) == 3
    assert list(HeraldMessage.objects.values_list("pk", flat=True)) == [fresh.pk]
