"""Permission classes: tiny, one line of docstring each."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from realtime.auth import Principal
from realtime.errors import Forbidden


def principal_of(request: Request) -> Principal:
    assert isinstance(request.auth, Principal)
    return request.auth


class IsPrincipal(BasePermission):
    """Any resolved key or token of an active tenant."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.auth, Principal)


class IsServiceRole(BasePermission):
    """A secret key, or a token with role service_role."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if isinstance(request.auth, Principal) and request.auth.is_service:
            return True
        raise Forbidden("This needs a secret key (role service_role)")


class IsServiceRoleToWrite(BasePermission):
    """Any principal may read; writing needs role service_role."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if request.method in SAFE_METHODS:
            return isinstance(request.auth, Principal)
        return IsServiceRole().has_permission(request, view)


class IsSecretKey(BasePermission):
    """A secret key itself (not a token, even one with role service_role)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        principal = request.auth
        if (
            isinstance(principal, Principal)
            and principal.key_id is not None
            and principal.is_service
        ):
            return True
        raise Forbidden("This needs a secret key (sk_…)")
