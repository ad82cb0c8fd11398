"""OpenAPI 3 (drf-spectacular): the apikey scheme, names, and the shared error shape.

Every operation is documented with the errors any request may get, in the one
error shape `{"error", "message"}`; 429 carries `Retry-After`.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.extensions import (
    OpenApiAuthenticationExtension,
    OpenApiViewExtension,
)
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers

from realtime.bounds import MAX_JSON_DEPTH

# Set on an operation whose body may be one object or a list of them.
ONE_OR_MANY = "x-herald-one-or-many"
HTTP_METHODS = {"get", "put", "post", "delete", "patch"}

ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {"type": "string", "description": "A stable code."},
        "message": {"type": "string", "description": "What went wrong."},
    },
    "required": ["error", "message"],
}
COMMON_ERRORS = {
    "400": "Malformed JSON, JSON nested deeper than "
    f"{MAX_JSON_DEPTH} levels, or a missing or invalid field (the message names it).",
    "401": "Missing, unknown or revoked key; a forged or expired token.",
    "403": "The key or token may not do this; a suspended tenant.",
    "429": "A rate limit: retry after `Retry-After` seconds.",
}
# The tenant API (realtime/api/tenants.py): an operator token, not a tenant's key.
OPERATOR_PATHS = "/api/tenants"
OPERATOR_ERRORS = {
    "400": COMMON_ERRORS["400"] + " An unknown field.",
    "401": "No operator token, or a wrong one.",
    "403": "A tenant's key or token instead of the operator token.",
    "404": "HERALD_OPERATOR_TOKEN is unset (the API is off), or no such tenant or key.",
    "429": "Too many failed authentications from this address: retry after "
    "`Retry-After` seconds.",
}
BODY_ERRORS = {
    "413": "A body over HERALD_MAX_BODY_BYTES.",
    "415": "A body that is not application/json.",
}


class HeraldAutoSchema(AutoSchema):
    """Component names from the view's nested serializers: `ChangePublishInput`."""

    def get_serializer_name(
        self, serializer: serializers.Serializer, direction: Any
    ) -> str:
        parts = type(serializer).__qualname__.split(".")
        return "".join(p.removesuffix("Serializer").removesuffix("Api") for p in parts)


class PrincipalAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "realtime.api.authentication.PrincipalAuthentication"
    name = "apikey"

    def get_security_definition(self, auto_schema: AutoSchema) -> dict[str, Any]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "apikey",
            "description": "A tenant's key (`pk_…` publishable, `sk_…` secret) or "
            "a user token naming its tenant in `ref`. An `Authorization: Bearer "
            "<token>` header, when present, decides the role.",
        }


class OperatorAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "realtime.api.operator.OperatorAuthentication"
    name = "operatorToken"

    def get_security_definition(self, auto_schema: AutoSchema) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "The operator token, HERALD_OPERATOR_TOKEN. Unset, "
            "the tenant API answers 404.",
        }


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
        },
    }


def _one_or_many(operation: dict[str, Any]) -> None:
    for media in operation.get("requestBody", {}).get("content", {}).values():
        item = media["schema"]
        media["schema"] = {
            "oneOf": [
                item,
                {
                    "type": "array",
                    "items": item,
                    "minItems": 1,
                    "maxItems": settings.HERALD_MAX_BATCH,
                },
            ]
        }


def _document_errors(path: str, method: str, operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    operator = path.startswith(OPERATOR_PATHS)
    errors = dict(OPERATOR_ERRORS if operator else COMMON_ERRORS)
    if method in ("post", "put", "patch"):
        errors |= BODY_ERRORS
    if "{" in path and not operator:
        errors["404"] = "No such resource of yours."
    for status, description in errors.items():
        responses.setdefault(status, _error(description))
    responses["429"].setdefault("headers", {})["Retry-After"] = {
        "description": "Seconds until the limit's window ends.",
        "schema": {"type": "integer"},
    }
    for status, response in responses.items():
        if status.startswith(("4", "5")) and "content" not in response:
            response["content"] = _error("")["content"]


def add_error_responses(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    """Postprocessing hook: the error shape, on every operation."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = (
        ERROR_SCHEMA
    )
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if method not in HTTP_METHODS:
                continue
            if operation.pop(ONE_OR_MANY, False):
                _one_or_many(operation)
            _document_errors(path, method, operation)
    return result


# --- Supabase's REST broadcast (realtime/api/broadcast.py) ------------------------
# Described here, as drf-spectacular's view extensions allow, so the views stay
# as plain as Supabase's contract: 202 and an empty body.


class BroadcastBatchSchema(OpenApiViewExtension):
    target_class = "realtime.api.broadcast.BroadcastBatchApi"

    def view_replacement(self) -> type:
        view: Any = self.target_class

        class BroadcastBatch(view):  # type: ignore[valid-type,misc]
            @extend_schema(
                operation_id="broadcast_batch",
                request=inline_serializer(
                    "BroadcastBatchInput",
                    {"messages": view.MessageSerializer(many=True)},
                ),
                responses={202: OpenApiResponse(description="Accepted, no body.")},
                description="Supabase's batch broadcast. Private messages the "
                "principal may not write are skipped (still 202).",
            )
            def post(self, request: Any, *args: Any, **kwargs: Any) -> Any:
                return super().post(request, *args, **kwargs)

        return BroadcastBatch


class BroadcastSingleSchema(OpenApiViewExtension):
    target_class = "realtime.api.broadcast.BroadcastSingleApi"

    def view_replacement(self) -> type:
        view: Any = self.target_class

        class BroadcastSingle(view):  # type: ignore[valid-type,misc]
            @extend_schema(
                operation_id="broadcast_single",
                parameters=[
                    OpenApiParameter("topic", str, OpenApiParameter.PATH),
                    OpenApiParameter("event", str, OpenApiParameter.PATH),
                    OpenApiParameter(
                        "private",
                        bool,
                        description="true: a private topic (channel policies apply).",
                    ),
                ],
                request={
                    "application/json": {"description": "The payload itself."},
                    "application/octet-stream": {
                        "type": "string",
                        "format": "binary",
                    },
                },
                responses={202: OpenApiResponse(description="Accepted, no body.")},
                description="One message to a topic and event; the body is its "
                "payload (JSON, or raw bytes for realtime-js v2 clients).",
            )
            def post(self, request: Any, *args: Any, **kwargs: Any) -> Any:
                return super().post(request, *args, **kwargs)

        return BroadcastSingle
