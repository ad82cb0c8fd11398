"""One error shape everywhere: `{"error": code, "message": text}`."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.core.exceptions import ValidationError as ModelValidationError
from django.db import InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from rest_framework import exceptions
from rest_framework.response import Response

from realtime.errors import DatabaseUnavailable, HeraldError

logger = logging.getLogger(__name__)


def error_body(code: str, message: str) -> dict[str, str]:
    return {"error": code, "message": message}


def error_json(code: str, message: str, status: int) -> JsonResponse:
    """For plain Django views and middleware, outside DRF."""
    return JsonResponse(error_body(code, message), status=status)


def _first_error(detail: Any, path: str = "") -> str:
    """The first validation message, prefixed with the field it concerns."""
    if isinstance(detail, dict) and detail:
        key, value = next(iter(detail.items()))
        if isinstance(key, int):  # an item of a list body
            return _first_error(value, f"{path}[{key}]")
        name = "" if key == "non_field_errors" else str(key)
        return _first_error(value, ".".join(p for p in (path, name) if p))
    if isinstance(detail, list):
        # Either the messages of one field, or one entry per item of a list
        # body, where valid items have an empty dict.
        for index, item in enumerate(detail):
            if not isinstance(item, dict):
                return _first_error(item, path)
            if item:
                return _first_error(item, f"{path}[{index}]")
    return f"{path}: {detail}" if path else str(detail)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    if isinstance(exc, OperationalError | InterfaceError):
        # The database is down or unreachable: the transaction, if any, rolled
        # back, so nothing was written. Say so, and when to try again.
        logger.warning("Database unavailable in %s: %s", context.get("view"), exc)
        exc = DatabaseUnavailable(
            "The database is unavailable; nothing was written. Retry shortly."
        )
        body = error_body(exc.code, exc.message)
        return Response(body, status=exc.status_code, headers={"Retry-After": "5"})
    if isinstance(exc, HeraldError):
        return Response(error_body(exc.code, exc.message), status=exc.status_code)
    if isinstance(exc, RequestDataTooBig):
        return Response(error_body("payload_too_large", str(exc)), status=413)
    if isinstance(exc, ModelValidationError):  # a service's full_clean()
        exc = exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else exc.messages
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    if isinstance(exc, exceptions.ValidationError):
        return Response(error_body("invalid", _first_error(exc.detail)), status=400)
    if isinstance(exc, exceptions.APIException):
        headers = {}
        wait = getattr(exc, "wait", None)  # Throttled's, not in the stubs
        if isinstance(exc, exceptions.Throttled) and wait is not None:
            headers["Retry-After"] = str(int(wait) + 1)
        code = exc.get_codes() if isinstance(exc.get_codes(), str) else exc.default_code
        return Response(
            error_body(str(code), str(exc.detail)),
            status=exc.status_code,
            headers=headers,
        )
    logger.exception("Unhandled error in %s", context.get("view"))
    return Response(error_body("server_error", "Internal server error"), status=500)
