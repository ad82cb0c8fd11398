"""Writing the activity log. Append-only: nothing here updates or deletes rows."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from audit.models import ActivityLog, EventType
from realtime.bounds import storable

if TYPE_CHECKING:
    from realtime.auth import Principal
    from realtime.models import Tenant


def activity_record(
    *,
    event_type: EventType,
    tenant: Tenant | None = None,
    principal: Principal | None = None,
    actor: str = "",
    target: str = "",
    ip: str | None = None,
    details: dict[str, Any] | None = None,
) -> ActivityLog:
    """Append one event; call it inside the transaction of the change it records."""
    entry = activity_entry(
        event_type=event_type,
        tenant=tenant,
        principal=principal,
        actor=actor,
        target=target,
        ip=ip,
        details=details,
    )
    entry.save(force_insert=True)
    return entry


def activity_entry(
    *,
    event_type: EventType,
    tenant: Tenant | None = None,
    principal: Principal | None = None,
    actor: str = "",
    target: str = "",
    ip: str | None = None,
    details: dict[str, Any] | None = None,
) -> ActivityLog:
    """One event, not yet saved: for writing many at once (`bulk_create`)."""
    if principal is not None:
        tenant = tenant or principal.tenant
        actor = actor or principal.actor
    return ActivityLog(
        event_type=event_type,
        tenant=tenant,
        tenant_slug=tenant.slug if tenant else "",
        actor=storable(actor[:255]),
        role=storable(principal.role[:63]) if principal else "",
        target=storable(target[:255]),
        ip=ip,
        details=storable(details or {}),
    )
