"""The operators' live dashboard: a page for staff, and the figures it polls."""

from __future__ import annotations

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from realtime.api.errors import error_json
from realtime.dashboard_selectors import REFUSAL_WINDOW, dashboard_snapshot

# How often the page asks for fresh figures.
POLL_INTERVAL_MS = 2000


@require_GET
@never_cache
@staff_member_required
def dashboard_page(request: HttpRequest) -> HttpResponse:
    """The page, with the figures of now; its script keeps them current."""
    context = {
        "snapshot": dashboard_snapshot(),
        "poll_ms": POLL_INTERVAL_MS,
        "refusal_hours": int(REFUSAL_WINDOW.total_seconds() // 3600),
    }
    return render(request, "herald/dashboard.html", context)


@require_GET
@never_cache
def dashboard_data(request: HttpRequest) -> JsonResponse:
    """The same figures as JSON; a script gets 403, not a login page, when refused."""
    user = request.user
    if not (user.is_active and user.is_staff):
        return error_json("forbidden", "Staff only: sign in at /admin/.", 403)
    return JsonResponse(dashboard_snapshot())
