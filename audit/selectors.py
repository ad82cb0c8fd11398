"""Reads of the activity log."""

from __future__ import annotations

from audit.models import ActivityLog, EventType
from realtime.models import Tenant


def activity_page(
    *,
    tenant: Tenant,
    before: int | None = None,
    event_type: EventType | None = None,
    limit: int = 100,
) -> list[ActivityLog]:
    """A tenant's activity, newest first, older than the `before` id."""
    rows = ActivityLog.objects.filter(tenant=tenant).order_by("-id")
    if before is not None:
        rows = rows.filter(pk__lt=before)
    if event_type is not None:
        rows = rows.filter(event_type=event_type)
    return list(rows[:limit])
