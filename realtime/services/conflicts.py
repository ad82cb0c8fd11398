"""Conflict-aware publishing: last write wins, per table and primary key.

A change may carry a version, `(updated_at, device_id)`. One published with a
version not newer than the last accepted one for the same record is stale: it is
not recorded nor delivered, and is counted and logged as a conflict. The device id
breaks ties between equal timestamps, so the winner is the same whatever order
the changes arrive in.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import Q

from audit.models import EventType
from audit.services import activity_record
from realtime import errors
from realtime.auth import Principal
from realtime.models import LiveUpdate, RecordVersion, Tenant
from realtime.services.changes import ChangeInput, change_validate, changes_publish

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, order=True)
class Version:
    """Ordered by timestamp, then device id: the later one wins."""

    updated_at: datetime
    device_id: str = ""


@dataclass(frozen=True, slots=True)
class VersionedChange:
    change: ChangeInput
    version: Version | None = None
    pk_column: str = "id"


@dataclass(frozen=True, slots=True)
class PublishOutcome:
    """One change's fate: published (`update`) or stale (`current` won)."""

    change: ChangeInput
    update: LiveUpdate | None = None
    current: Version | None = None

    @property
    def stale(self) -> bool:
        return self.update is None


def record_key(item: VersionedChange, index: int, many: bool) -> tuple[str, str]:
    """(table, primary key) of a versioned change, from its record (old for DELETE)."""
    change = item.change
    row = change.old_record if change.type == "DELETE" else change.record
    value = (row or {}).get(item.pk_column)
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        where = "old_record" if change.type == "DELETE" else "record"
        prefix = f"[{index}]." if many else ""
        raise errors.InvalidInput(
            f"{prefix}{where}.{item.pk_column}: a string or integer primary key is "
            "required with a version"
        )
    return change.table, str(value)[:255]


def _validate(items: Sequence[VersionedChange]) -> list[tuple[str, str] | None]:
    many = len(items) > 1
    keys: list[tuple[str, str] | None] = []
    for index, item in enumerate(items):
        try:
            change_validate(item.change)
        except errors.InvalidInput as exc:
            raise errors.InvalidInput(
                f"[{index}].{exc.message}" if many else exc.message
            ) from exc
        keys.append(record_key(item, index, many) if item.version else None)
    return keys


def _lock_versions(
    tenant: Tenant, keys: set[tuple[str, str]]
) -> dict[tuple[str, str], RecordVersion]:
    """The version rows of these records, created if new, locked in one order.

    Locking in (table, pk) order means two batches touching the same records
    wait for each other instead of deadlocking.
    """
    if not keys:
        # No versioned change: no row to lock (an empty match would lock
        # and rewrite every version row of the tenant).
        return {}
    ordered = sorted(keys)
    RecordVersion.objects.bulk_create(
        [RecordVersion(tenant=tenant, table=t, pk_value=pk) for t, pk in ordered],
        ignore_conflicts=True,
    )
    by_table: dict[str, list[str]] = defaultdict(list)
    for table, pk in ordered:
        by_table[table].append(pk)
    match = Q()
    for table, pks in by_table.items():
        match |= Q(table=table, pk_value__in=pks)
    rows = (
        RecordVersion.objects.select_for_update()
        .filter(match, tenant=tenant)
        .order_by("table", "pk_value")
    )
    return {(row.table, row.pk_value): row for row in rows}


def changes_publish_versioned(
    *,
    principal: Principal,
    items: Sequence[VersionedChange],
    ip: str | None = None,
) -> list[PublishOutcome]:
    """Publish changes, dropping stale versions; all in one transaction."""
    keys = _validate(items)
    with transaction.atomic():
        versions = _lock_versions(principal.tenant, {k for k in keys if k})
        accepted: list[int] = []
        current: dict[int, Version] = {}
        for index, (item, key) in enumerate(zip(items, keys, strict=True)):
            if key is None or item.version is None:
                accepted.append(index)
                continue
            row = versions[key]
            if row.updated_at is not None:
                latest = Version(row.updated_at, row.device_id)
                if item.version <= latest:
                    current[index] = latest
                    row.conflicts += 1
                    continue
            row.updated_at = item.version.updated_at
            row.device_id = item.version.device_id
            accepted.append(index)
        created = (
            changes_publish(
                principal=principal,
                changes=[items[i].change for i in accepted],
                ip=ip,
            )
            if accepted
            else []
        )
        published = dict(zip(accepted, created, strict=True))
        for index, key in enumerate(keys):
            if key is not None and index in published:
                versions[key].seq = published[index].pk
        if versions:
            RecordVersion.objects.bulk_update(
                list(versions.values()),
                ["updated_at", "device_id", "seq", "conflicts"],
            )
        for index, latest in current.items():
            _conflict_record(principal, items[index], keys[index], latest, ip)
    return [
        PublishOutcome(
            change=item.change, update=published.get(index), current=current.get(index)
        )
        for index, item in enumerate(items)
    ]


def _conflict_record(
    principal: Principal,
    item: VersionedChange,
    key: tuple[str, str] | None,
    latest: Version,
    ip: str | None,
) -> None:
    assert key is not None and item.version is not None
    refused = {
        "updated_at": item.version.updated_at.isoformat(),
        "device_id": item.version.device_id,
    }
    kept = {"updated_at": latest.updated_at.isoformat(), "device_id": latest.device_id}
    logger.info(
        "Stale %s of %s#%s refused for tenant %s: %s is not newer than %s",
        item.change.type,
        key[0],
        key[1],
        principal.tenant.slug,
        refused,
        kept,
    )
    activity_record(
        event_type=EventType.CONFLICT,
        principal=principal,
        target=f"{key[0]}#{key[1]}",
        ip=ip,
        details={"type": item.change.type, "refused": refused, "current": kept},
    )
