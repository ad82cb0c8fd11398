"""Recording changes: the change log row and, on commit, a hint to the relays."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from audit.models import EventType
from audit.services import activity_record
from realtime import errors
from realtime.auth import Principal
from realtime.columns import columns_infer
from realtime.models import LiveUpdate, Tenant
from realtime.validators import is_identifier
from realtime.wake import wake_on_commit

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ChangeInput:
    table: str
    type: str
    record: dict[str, Any] | None = None
    old_record: dict[str, Any] | None = None
    columns: list[dict[str, str]] | None = None


def change_validate(change: ChangeInput) -> None:
    """Refuse a change that could not be delivered as a postgres_changes frame."""
    if not is_identifier(change.table):
        raise errors.InvalidInput(f"table: {change.table!r} is not a plain identifier")
    if change.type not in LiveUpdate.Type.values:
        raise errors.InvalidInput("type: must be INSERT, UPDATE or DELETE")
    if change.type != "DELETE" and not isinstance(change.record, dict):
        raise errors.InvalidInput(f"record: an object is required for {change.type}")
    if change.type == "DELETE" and not isinstance(change.old_record, dict):
        raise errors.InvalidInput("old_record: an object is required for DELETE")
    if change.old_record is not None and not isinstance(change.old_record, dict):
        raise errors.InvalidInput("old_record: must be an object")


def live_updates_record(
    *, tenant: Tenant, changes: Sequence[ChangeInput]
) -> list[LiveUpdate]:
    """Append changes in the caller's transaction; deliver them once it commits.

    A rolled-back transaction leaves no row and sends nothing.
    """
    for index, change in enumerate(changes):
        try:
            change_validate(change)
        except errors.InvalidInput as exc:
            # In a batch, say which change was refused.
            raise errors.InvalidInput(
                f"[{index}].{exc.message}" if len(changes) > 1 else exc.message
            ) from exc
    rows = [
        LiveUpdate(
            tenant=tenant,
            table=c.table,
            type=c.type,
            record=c.record if c.type != "DELETE" else None,
            old_record=c.old_record,
            columns=c.columns
            if c.columns is not None
            else columns_infer(c.record if c.type != "DELETE" else c.old_record),
        )
        for c in changes
    ]
    with transaction.atomic():
        created = LiveUpdate.objects.bulk_create(rows)
        # Every process's relay reads the committed rows from the log and
        # delivers them (realtime/relay.py); this only wakes them at once.
        # robust: a channel layer that is down must not turn a committed
        # publish into an error; the relays' poll finds the rows anyway.
        wake_on_commit(tenant_id=tenant.pk)
    return created


def changes_publish(
    *, principal: Principal, changes: Sequence[ChangeInput], ip: str | None = None
) -> list[LiveUpdate]:
    """A REST publish: the changes and one activity row, all or nothing."""
    with transaction.atomic():
        created = live_updates_record(tenant=principal.tenant, changes=changes)
        activity_record(
            event_type=EventType.PUBLISH,
            principal=principal,
            target=",".join(sorted({c.table for c in changes}))[:255],
            ip=ip,
            details={"count": len(created), "first_seq": created[0].pk},
        )
    return created


CONTENT_TABLE = "live_updates"


def content_event_publish(
    *, principal: Principal, event: dict[str, Any], ip: str | None = None
) -> LiveUpdate:
    """A content event becomes an INSERT on `live_updates` whose `id` is its cursor.

    The record is `{id, site_id, event_type, collection, slug, item_id,
    timestamp, metadata}`.
    """
    record = {
        "site_id": event["site_id"],
        "event_type": event["event_type"],
        "collection": event["collection"],
        "slug": event.get("slug"),
        "item_id": event["item_id"],
        "timestamp": timezone.now().isoformat(),
        "metadata": event.get("metadata") or {},
    }
    with transaction.atomic():
        update = changes_publish(
            principal=principal,
            changes=[ChangeInput(table=CONTENT_TABLE, type="INSERT", record=record)],
            ip=ip,
        )[0]
        # The row id is only known once inserted; the record carries it so a
        # client can relate what it received to what catch-up returns.
        update.record = {"id": update.pk, **record}
        update.columns = columns_infer(update.record)
        update.save(update_fields=["record", "columns"])
    return update
