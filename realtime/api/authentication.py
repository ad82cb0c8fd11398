"""DRF authentication: `apikey` (header or query) plus optional Bearer token."""

from __future__ import annotations

from typing import Any

from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from realtime.api.throttling import auth_failure_record, auth_failures_check
from realtime.auth import Principal, principal_resolve
from realtime.client_ip import request_client_ip
from realtime.errors import AuthError
from realtime.services.sockets import auth_refusal_event, refusal_record


def bearer_token(request: Request) -> str | None:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


class PrincipalAuthentication(BaseAuthentication):
    """Resolves the caller once per request; `request.auth` is the Principal."""

    def authenticate(self, request: Request) -> tuple[Any, Principal]:
        # realtime-js sends the apikey in the query string of its REST calls.
        apikey = request.META.get("HTTP_APIKEY") or request.query_params.get("apikey")
        # Per client IP: too many failures and even good credentials wait (429).
        auth_failures_check(request)
        try:
            principal = principal_resolve(apikey=apikey, bearer=bearer_token(request))
        except AuthError as exc:
            refusal_record(
                event_type=auth_refusal_event(exc),
                reason=exc.message,
                ip=request_client_ip(request),
                target=request.path[:255],
            )
            auth_failure_record(request)
            raise
        return None, principal

    def authenticate_header(self, request: Request) -> str:
        return 'apikey realm="herald"'
