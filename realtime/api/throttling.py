"""Rate limits on every REST endpoint, with django-ratelimit's shared counters.

Counters live in the cache (Redis when REDIS_URL is set), so a limit holds across
server processes. Requests are counted per principal and scope (a view's
`rate_scope`); failed authentications are counted per client IP.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django_ratelimit.core import get_usage
from redis.exceptions import RedisError
from rest_framework.exceptions import Throttled
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from audit.models import EventType
from audit.services import activity_record
from realtime.auth import Principal
from realtime.client_ip import request_client_ip
from realtime.models import Tenant

logger = logging.getLogger(__name__)

AUTH_FAILURE_GROUP = "herald.auth-failure"


class RateLimited(Throttled):
    default_code = "rate_limited"
    default_detail = "Too many requests."


def _ip_key(request: Request) -> str:
    # No address at all (a UNIX socket without a trusted proxy in front): such
    # clients are indistinguishable and share one budget.
    return request_client_ip(request) or ""


def scope_rate(*, tenant: Tenant, scope: str) -> str:
    """The tenant's limit for the scope, else Herald's; then the `default` ones."""
    own, defaults = tenant.rate_limits or {}, settings.HERALD_RATE_LIMITS
    return (
        own.get(scope)
        or defaults.get(scope)
        or own.get("default")
        or defaults["default"]
    )


def principal_key(principal: Principal, request: Request) -> str:
    key = f"{principal.tenant.pk}:{principal.actor}"
    # Many end users share one publishable key, or a token without `sub`: each
    # client IP then gets its own budget, so one noisy client cannot spend it all.
    shared = (principal.key_id is not None and not principal.is_service) or (
        principal.key_id is None and not principal.sub
    )
    return f"{key}:{_ip_key(request)}" if shared else key


def _refuse(usage: dict[str, Any], message: str) -> RateLimited:
    return RateLimited(wait=max(1, usage["time_left"]), detail=message)


def usage_or_none(
    request: Request | HttpRequest, **kwargs: Any
) -> dict[str, Any] | None:
    """django-ratelimit's usage, or None (no limit) while the cache is down.

    RATELIMIT_FAIL_OPEN only covers a cache that answers nothing; a Redis that
    refuses connections raises, and must not turn every request into a 500.
    """
    try:
        return get_usage(request, **kwargs)
    except (RedisError, OSError) as exc:
        logger.warning("Rate limits lapse: the cache is unavailable (%s)", exc)
        return None


class PrincipalRateThrottle(BaseThrottle):
    """Counts each request against its principal's limit for the view's scope."""

    def allow_request(self, request: Request, view: Any) -> bool:
        principal = request.auth
        if not isinstance(principal, Principal):
            return True  # public views (the schema) have no principal to count
        scope = getattr(view, "rate_scope", "default")
        rate = scope_rate(tenant=principal.tenant, scope=scope)
        key = principal_key(principal, request)
        usage = usage_or_none(
            request,
            group=f"herald.{scope}",
            key=lambda group, req: key,
            rate=rate,
            increment=True,
        )
        if usage is None or not usage["should_limit"]:
            return True
        if usage["count"] == usage["limit"] + 1:  # first refusal of this window
            logger.info("Rate limit %s reached by %s", scope, key)
            activity_record(
                event_type=EventType.RATE_LIMITED,
                principal=principal,
                target=scope,
                ip=request_client_ip(request),
                details={"rate": rate},
            )
        raise _refuse(usage, f"Rate limit exceeded: {rate} for {scope}.")


def _auth_failures(request: Request, *, increment: bool) -> dict[str, Any] | None:
    ip = _ip_key(request)
    return usage_or_none(
        request,
        group=AUTH_FAILURE_GROUP,
        key=lambda group, req: ip,
        rate=settings.HERALD_AUTH_FAILURE_RATE,
        increment=increment,
    )


def auth_failures_check(request: Request) -> None:
    """Refuse a client IP that failed authentication too often in this window."""
    usage = _auth_failures(request, increment=False)
    if usage is not None and usage["should_limit"]:
        raise _refuse(usage, "Too many failed authentications from this address.")


def auth_failure_record(request: Request) -> None:
    """Count a failed authentication; raise once the IP is over its limit."""
    usage = _auth_failures(request, increment=True)
    if usage is None or not usage["should_limit"]:
        return
    if usage["count"] == usage["limit"] + 1:
        ip = request_client_ip(request)
        logger.warning("Authentication failures from %s over the limit", ip)
        activity_record(
            event_type=EventType.RATE_LIMITED,
            actor=f"ip:{ip}",
            target="authentication",
            ip=ip,
            details={"rate": settings.HERALD_AUTH_FAILURE_RATE},
        )
    raise _refuse(usage, "Too many failed authentications from this address.")
