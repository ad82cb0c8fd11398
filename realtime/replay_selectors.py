"""Reading what a join replays (see realtime/replay.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.utils import timezone

from realtime.change_log import ChangePage, Reader, changes_after, cursor_check
from realtime.models import HeraldMessage, Tenant

# Changes a change feed replays per read; the whole backlog is read in pages.
FEED_PAGE = 200


@dataclass(frozen=True, slots=True)
class Stored:
    id: int
    event: str
    payload: Any


def messages_replay(
    *, tenant: Tenant, topic: str, since_ms: int, limit: int
) -> list[Stored]:
    """The latest `limit` private broadcasts to `topic` stored at or after
    `since_ms`, oldest first (Supabase's replay: the most recent ones win).

    Rows past the tenant's retention that the maintenance has not pruned yet
    are not replayed either, and neither are rows stamped in the future
    (a minute's drift allowed, as Supabase).
    """
    now = timezone.now()
    since = datetime.fromtimestamp(since_ms / 1000, tz=UTC)
    oldest = now - timedelta(hours=tenant.broadcast_retention_hours)
    rows = (
        HeraldMessage.objects.filter(
            tenant_slug=tenant.slug,
            topic=topic,
            private=True,
            created_at__gte=max(since, oldest),
            created_at__lt=now + timedelta(minutes=1),
        )
        .order_by("-created_at", "-id")
        .values_list("id", "event", "payload")[:limit]
    )
    return [Stored(*row) for row in reversed(list(rows))]


def feed_replay(
    *, reader: Reader, tenant: Tenant, table: str, after: int
) -> ChangePage:
    """One page of a change feed's backlog after cursor `after`, as `reader`
    may see it. Raises CursorGone when retention deleted changes after it."""
    cursor_check(tenant=tenant, cursor=after)
    return changes_after(reader=reader, after=after, limit=FEED_PAGE, tables=[table])
