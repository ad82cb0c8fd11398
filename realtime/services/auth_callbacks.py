"""A tenant's authorization callback: every write with its activity row."""

from __future__ import annotations

from django.db import transaction

from audit.models import EventType
from audit.services import activity_record
from realtime.auth_callback import secret_generate
from realtime.models import AuthCallback, Tenant


def auth_callback_set(
    *,
    tenant: Tenant,
    url: str,
    on_join: bool = False,
    timeout: float = 2.0,
    default_ttl: int = 60,
    max_ttl: int = 600,
    rotate_secret: bool = False,
    actor: str = "",
) -> tuple[AuthCallback, str | None]:
    """Create or change the tenant's callback.

    Returns it with its secret when one was made (on creation, or rotated),
    else None: the secret is shown once, by the caller. Sockets already open
    keep the settings they read at connect.
    """
    callback = AuthCallback.objects.filter(tenant=tenant).first()
    fresh = callback is None or rotate_secret
    callback = callback or AuthCallback(tenant=tenant)
    callback.url, callback.on_join, callback.timeout = url, on_join, timeout
    callback.default_ttl, callback.max_ttl = default_ttl, max_ttl
    if fresh:
        callback.secret = secret_generate()
    callback.full_clean()
    with transaction.atomic():
        callback.save()
        _record(callback, actor, rotated=fresh)
    return callback, callback.secret if fresh else None


def auth_callback_save(*, callback: AuthCallback, actor: str = "") -> AuthCallback:
    """Save an edited callback (admin); a new one gets its secret here."""
    fresh = not callback.secret
    if fresh:
        callback.secret = secret_generate()
    callback.full_clean()
    with transaction.atomic():
        callback.save()
        _record(callback, actor, rotated=fresh)
    return callback


def auth_callback_remove(*, callback: AuthCallback, actor: str = "") -> None:
    with transaction.atomic():
        activity_record(
            event_type=EventType.POLICY_DELETED,
            tenant=callback.tenant,
            actor=actor,
            target="auth_callback",
            details={"url": callback.url},
        )
        callback.delete()


def _record(callback: AuthCallback, actor: str, *, rotated: bool) -> None:
    activity_record(
        event_type=EventType.POLICY_CHANGED,
        tenant=callback.tenant,
        actor=actor,
        target="auth_callback",
        # Never the secret: only that it was made anew.
        details={
            "url": callback.url,
            "on_join": callback.on_join,
            "timeout": callback.timeout,
            "secret_rotated": rotated,
        },
    )
