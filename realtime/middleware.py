"""Refuse oversized API bodies by their declared length, before reading them."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from realtime.api.errors import error_json


class BodySizeLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = settings.HERALD_MAX_BODY_BYTES
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if declared > limit and not request.path.startswith("/admin/"):
            return error_json(
                "payload_too_large", f"The body is larger than {limit} bytes", 413
            )
        return self.get_response(request)
