"""A socket's life as the activity log sees it: connect, refusals, disconnect."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from audit.models import ActivityLog, EventType
from audit.services import activity_entry, activity_record
from realtime import errors
from realtime.auth import (
    KeyCache,
    Principal,
    principal_for_tenant,
    principal_from_apikey,
)
from realtime.models import Tenant

logger = logging.getLogger(__name__)

# Refusals worth one activity row each, but not a flood of them: at most one
# row per (tenant, kind, ip) in this many seconds, per process.
REFUSAL_LOG_INTERVAL = 10.0
_last_logged: dict[tuple[int | None, int, str | None], float] = {}


TOKEN_ERRORS = (
    errors.MalformedToken,
    errors.TokenSignatureError,
    errors.TokenClaimsMissing,
    errors.TokenClaimInvalid,
    errors.IssuerKeysUnavailable,
)


def refusal_event(exc: errors.HeraldError) -> EventType:
    if isinstance(exc, errors.TokenExpired):
        return EventType.TOKEN_EXPIRED
    if isinstance(exc, errors.AuthError):
        return EventType.TOKEN_REFUSED
    return EventType.JOIN_REFUSED


def auth_refusal_event(exc: errors.AuthError) -> EventType:
    """A refused REST credential: an expired or bad token, or a bad key."""
    if isinstance(exc, errors.TokenExpired):
        return EventType.TOKEN_EXPIRED
    if isinstance(exc, TOKEN_ERRORS):
        return EventType.TOKEN_REFUSED
    return EventType.AUTH_FAILED


def refusal_record(
    *,
    event_type: EventType,
    reason: str,
    tenant: Tenant | None = None,
    principal: Principal | None = None,
    target: str = "",
    ip: str | None = None,
) -> None:
    """An activity row for a refusal or a limit, throttled per tenant and IP."""
    tenant = tenant or (principal.tenant if principal else None)
    key = (tenant.pk if tenant else None, int(event_type), ip)
    now = time.monotonic()
    if now - _last_logged.get(key, -REFUSAL_LOG_INTERVAL) < REFUSAL_LOG_INTERVAL:
        return
    _last_logged[key] = now
    activity_record(
        event_type=event_type,
        tenant=tenant,
        principal=principal,
        target=target,
        ip=ip,
        details={"reason": reason},
    )


def connections_open(*, items: Sequence[Mapping[str, Any]]) -> list[Any]:
    """Resolve sockets' keys: each one's principal, or the error refusing it
    (written to the activity log); the connect rows in one statement."""
    results: list[Any] = []
    for item in items:
        try:
            results.append(principal_from_apikey(item["apikey"], keys=item.get("keys")))
        except errors.HeraldError as exc:
            refusal_record(
                event_type=refusal_event(exc), reason=exc.message, ip=item["ip"]
            )
            results.append(exc)
    ActivityLog.objects.bulk_create(
        [
            activity_entry(
                event_type=EventType.CONNECT, principal=result, ip=item["ip"]
            )
            for item, result in zip(items, results, strict=True)
            if isinstance(result, Principal)
        ]
    )
    return results


def connections_close(*, items: Sequence[Mapping[str, Any]]) -> list[None]:
    """The disconnect rows of many sockets, in one statement."""
    ActivityLog.objects.bulk_create(
        [
            activity_entry(
                event_type=EventType.DISCONNECT,
                principal=item["principal"],
                ip=item["ip"],
                details={"code": item["code"]},
            )
            for item in items
        ]
    )
    return [None] * len(items)


def join_principal(
    *,
    connection: Principal,
    token: str,
    topic: str,
    ip: str | None,
    keys: KeyCache | None = None,
) -> Principal:
    """The principal of a join's own token, or its refusal, written down."""
    try:
        return principal_for_tenant(connection.tenant, token, keys=keys)
    except errors.HeraldError as exc:
        refusal_record(
            event_type=refusal_event(exc),
            reason=exc.message,
            principal=connection,
            target=topic,
            ip=ip,
        )
        raise
