"""The operators' credential: `Authorization: Bearer $HERALD_OPERATOR_TOKEN`.

Nothing else opens the tenant API: not a tenant's secret key, not a token
with role service_role. With the variable unset the API does not exist (404).
Refusals are written to the activity log and counted against the client IP
by the same lock-out as every other failed authentication (throttling.py).
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.models import EventType
from realtime import errors
from realtime.api.authentication import bearer_token
from realtime.api.throttling import auth_failure_record, auth_failures_check
from realtime.client_ip import request_client_ip
from realtime.keys import looks_like_key
from realtime.models import Tenant
from realtime.services.operators import operator_call_record
from realtime.services.sockets import refusal_record

logger = logging.getLogger(__name__)

OPERATOR_ACTOR = "operator"


@dataclass(frozen=True, slots=True)
class Operator:
    """The holder of the operator token, calling from `ip`."""

    ip: str | None
    actor: str = OPERATOR_ACTOR


def token_matches(presented: str, expected: str) -> bool:
    """Constant time, whatever the lengths and characters presented."""
    return hmac.compare_digest(
        presented.encode("utf-8", "surrogatepass"),
        expected.encode("utf-8", "surrogatepass"),
    )


def _tenant_credential(request: Request, presented: str | None) -> bool:
    """Did the caller bring a tenant's key or a user token instead?"""
    if request.META.get("HTTP_APIKEY") or request.query_params.get("apikey"):
        return True
    return presented is not None and (
        looks_like_key(presented) or presented.count(".") == 2
    )


def _refusal(request: Request, presented: str | None) -> errors.HeraldError:
    if _tenant_credential(request, presented):
        return errors.OperatorOnly()
    if presented is None:
        return errors.MissingOperatorToken()
    return errors.InvalidOperatorToken()


class OperatorAuthentication(BaseAuthentication):
    """`request.auth` is an Operator; anything else is refused and logged."""

    def authenticate(self, request: Request) -> tuple[Any, Operator]:
        expected = settings.HERALD_OPERATOR_TOKEN
        if not expected:
            # Off: answer as for a path that does not exist, and count nothing.
            raise errors.NotFound(f"No endpoint at {request.path}")
        auth_failures_check(request)
        presented = bearer_token(request)
        ip = request_client_ip(request)
        if presented is not None and token_matches(presented, expected):
            return None, Operator(ip=ip)
        exc = _refusal(request, presented)
        logger.info("Tenant API refused from %s: %s", ip, exc.code)
        refusal_record(
            event_type=EventType.AUTH_FAILED,
            reason=exc.message,
            ip=ip,
            target=f"{request.method} {request.path}"[:255],
        )
        auth_failure_record(request)
        raise exc

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="herald-operator"'


class IsOperator(BasePermission):
    """The operator token, nothing else."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.auth, Operator)


class OperatorApi(APIView):
    """A tenant API view: operator only; every call leaves an activity row.

    Writes record their own rows (tenant created, key revoked...) in their
    transaction; on top of those, each call is recorded once it is answered
    (`operator API call`: method, path, status), refused ones included.
    """

    authentication_classes = [OperatorAuthentication]
    permission_classes = [IsOperator]
    operator: Operator | None = None
    tenant: Tenant | None = None

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        assert isinstance(request.auth, Operator)
        self.operator = request.auth

    def finalize_response(
        self, request: Request, response: Any, *args: Any, **kwargs: Any
    ) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)
        if self.operator is not None:
            self._record(request, response.status_code)
        return response

    def _record(self, request: Request, status: int) -> None:
        assert self.operator is not None
        try:
            operator_call_record(
                actor=self.operator.actor,
                method=request.method or "",
                path=request.path,
                status=status,
                tenant=self.tenant,
                ip=self.operator.ip,
            )
        except (OperationalError, InterfaceError) as exc:
            # The answer (a 503, most likely) stands; say what was not written.
            logger.warning("Operator call not recorded, database unavailable: %s", exc)
