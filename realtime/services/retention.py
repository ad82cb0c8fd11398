"""Retention: the change log, broadcasts from the database and the activity log,
deleted in small batches.

Each batch is a short transaction of its own (a few thousand rows by id), so
a publisher never waits behind one long delete. For the change log, the
highest deleted cursor is kept on the tenant, so that a catch-up from an
older cursor is answered "gone" instead of silently missing changes.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from audit.models import ActivityLog
from realtime.models import HeraldMessage, LiveUpdate, Tenant


def live_updates_expire(
    *, tenant: Tenant, now: datetime | None = None, batch: int | None = None
) -> int:
    """Delete the tenant's changes older than its retention; returns how many."""
    batch = batch or settings.HERALD_RETENTION_BATCH
    cutoff = (now or timezone.now()) - timedelta(hours=tenant.change_retention_hours)
    expired = LiveUpdate.objects.filter(tenant=tenant, commit_timestamp__lt=cutoff)
    last = expired.order_by("-pk").values_list("pk", flat=True).first()
    if last is None:
        return 0
    deleted = 0
    # Everything up to the last expired cursor goes, so the watermark is exact.
    doomed = LiveUpdate.objects.filter(tenant=tenant, pk__lte=last).order_by("pk")
    while ids := list(doomed.values_list("pk", flat=True)[:batch]):
        with transaction.atomic():
            count, _ = LiveUpdate.objects.filter(pk__in=ids).delete()
            Tenant.objects.filter(
                pk=tenant.pk, changes_pruned_through__lt=ids[-1]
            ).update(changes_pruned_through=ids[-1])
        deleted += count
    return deleted


def changes_expire() -> int:
    """One retention pass over every tenant (a maintenance step)."""
    return sum(live_updates_expire(tenant=t) for t in Tenant.objects.all())


def activity_expire(*, now: datetime | None = None, batch: int | None = None) -> int:
    """Delete activity past HERALD_ACTIVITY_RETENTION_DAYS (a maintenance step)."""
    batch = batch or settings.HERALD_RETENTION_BATCH
    days = settings.HERALD_ACTIVITY_RETENTION_DAYS
    cutoff = (now or timezone.now()) - timedelta(days=days)
    old = ActivityLog.objects.filter(created_at__lt=cutoff).order_by("pk")
    deleted = 0
    while ids := list(old.values_list("pk", flat=True)[:batch]):
        count, _ = ActivityLog.objects.filter(pk__in=ids).delete()
        deleted += count
    return deleted


def messages_expire(*, now: datetime | None = None, batch: int | None = None) -> int:
    """Delete herald_messages past their retention.

    The relays broadcast a row once it commits; a public one is kept
    HERALD_MESSAGES_RETENTION_HOURS only so a relay that was down or behind
    can still read it. A private one is kept for replay (realtime/replay.py)
    for its tenant's `broadcast_retention_hours`, and one the relays still
    have to send (not `sent_live`) for the longer of the two.
    """
    batch = batch or settings.HERALD_RETENTION_BATCH
    now = now or timezone.now()
    relay_cutoff = now - timedelta(hours=settings.HERALD_MESSAGES_RETENTION_HOURS)
    tenants = dict(Tenant.objects.values_list("slug", "broadcast_retention_hours"))
    deleted = _delete_batches(
        HeraldMessage.objects.filter(created_at__lt=relay_cutoff).filter(
            Q(private=False) | ~Q(tenant_slug__in=list(tenants))
        ),
        batch,
    )
    for slug, hours in tenants.items():
        cutoff = now - timedelta(hours=hours)
        deleted += _delete_batches(
            HeraldMessage.objects.filter(
                tenant_slug=slug, private=True, created_at__lt=cutoff
            ).filter(Q(sent_live=True) | Q(created_at__lt=relay_cutoff)),
            batch,
        )
    return deleted


def _delete_batches(rows: QuerySet[HeraldMessage], batch: int) -> int:
    old = rows.order_by("pk")
    deleted = 0
    while ids := list(old.values_list("pk", flat=True)[:batch]):
        count, _ = HeraldMessage.objects.filter(pk__in=ids).delete()
        deleted += count
    return deleted
