"""The operators' tenant API as the activity log sees it."""

from __future__ import annotations

from audit.models import EventType
from audit.services import activity_record
from realtime.models import Tenant


def operator_call_record(
    *,
    actor: str,
    method: str,
    path: str,
    status: int,
    tenant: Tenant | None = None,
    ip: str | None = None,
) -> None:
    """One answered call of the tenant API, whatever it did or refused."""
    activity_record(
        event_type=EventType.OPERATOR_CALL,
        tenant=tenant,
        actor=actor,
        target=f"{method} {path}",
        ip=ip,
        details={"status": status},
    )
