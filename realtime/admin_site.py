"""Django's admin site, with its login throttled per client IP and per user name.

Without it a password could be guessed at the speed of the server. Past either
limit the login page answers 429 with the reason, and the password is not
even checked: a right one does not get in until the window ends.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.http import HttpRequest, HttpResponse

from audit.models import EventType
from audit.services import activity_record
from realtime.api.throttling import usage_or_none
from realtime.client_ip import request_client_ip

THROTTLED = "throttled"


def _login_usage(
    request: HttpRequest, *, group: str, key: str, rate: str
) -> dict[str, Any] | None:
    return usage_or_none(
        request,
        group=group,
        key=lambda group, req: key,
        rate=rate,
        increment=True,
    )


def admin_login_throttle(request: HttpRequest, *, username: str) -> int | None:
    """Count a login attempt; the seconds to wait when over a limit, else None."""
    ip = request_client_ip(request) or ""
    # Case folded: `Ops` and `ops` are one target to someone guessing.
    name = username.strip().lower()[:150]
    for group, key, rate in (
        ("herald.admin-login.ip", ip, settings.HERALD_ADMIN_LOGIN_RATE_IP),
        ("herald.admin-login.user", name, settings.HERALD_ADMIN_LOGIN_RATE_USER),
    ):
        usage = _login_usage(request, group=group, key=key, rate=rate)
        if usage is not None and usage["should_limit"]:
            if usage["count"] == usage["limit"] + 1:  # first refusal of a window
                activity_record(
                    event_type=EventType.RATE_LIMITED,
                    actor=f"ip:{ip}",
                    target=f"admin-login:{name}"[:255],
                    ip=ip or None,
                    details={"rate": rate, "per": group.rsplit(".", 1)[-1]},
                )
            return max(1, int(usage["time_left"]))
    return None


class ThrottledLoginForm(AdminAuthenticationForm):
    """Refuses before authenticating when the IP or the user name is over its limit."""

    retry_after: int | None = None

    def clean(self) -> dict[str, Any]:
        assert self.request is not None  # the login view always passes it
        username = str(self.data.get("username", ""))
        self.retry_after = admin_login_throttle(self.request, username=username)
        if self.retry_after is not None:
            raise ValidationError(
                "Too many login attempts from this address or for this user. "
                f"Try again in {self.retry_after} seconds.",
                code=THROTTLED,
            )
        return super().clean()


class HeraldAdminSite(admin.AdminSite):
    login_form = ThrottledLoginForm

    def login(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        response = super().login(request, extra_context)
        form = (getattr(response, "context_data", None) or {}).get("form")
        if isinstance(form, ThrottledLoginForm) and form.has_error(
            NON_FIELD_ERRORS, THROTTLED
        ):
            response.status_code = 429
            response["Retry-After"] = str(form.retry_after)
        return response
