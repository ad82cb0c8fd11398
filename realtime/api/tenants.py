"""The operators' tenant API, `/api/tenants` (operator token only; operator.py).

Create (the keys and JWT secret are in that answer only), list, show, update
settings, suspend and resume, rotate the JWT secret, create and revoke keys,
and one tenant's health. Every write goes through realtime.services.tenants.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from realtime.api.operator import Operator, OperatorApi
from realtime.dashboard_selectors import tenant_health
from realtime.errors import Conflict, InvalidInput
from realtime.models import ApiKey, Tenant
from realtime.selectors import tenant_by_slug, tenant_key, tenants_page
from realtime.services import tenants as services
from realtime.validators import SLUG_RE, validate_rate_limits

TAGS = ["tenants"]
# What PATCH may change, and what every answer shows. A new tenant setting is
# one more name here (and it is then validated by the model's own field).
SETTINGS_FIELDS = (
    "name",
    "max_concurrent_users",
    "max_connections_per_user",
    "max_channels_per_client",
    "max_joins_per_second",
    "max_events_per_second",
    "max_presence_events_per_second",
    "max_payload_size_kb",
    "change_retention_hours",
    "private_only",
    "rate_limits",
)
PAGE_MAX = 500
# The columns are 32-bit on every database; retention is further bounded so
# that `now - retention` stays a date (Python's datetime stops at year 1).
LIMIT_MAX = 2**31 - 1
RETENTION_HOURS_MAX = 24 * 365 * 10
KEY_KINDS = ApiKey.Kind.choices
CHECK_STATES = [("ok", "answers"), ("down", "does not answer")]


class StrictSerializer(serializers.Serializer):
    """Refuses fields it does not know, naming them: a typo is not a no-op."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {unknown[0]: f"Unknown field; known: {', '.join(self.fields)}."}
                )
        return super().to_internal_value(data)


class RateLimitsField(serializers.DictField):
    """{scope: rate}, checked by the model's own validator."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            child=serializers.CharField(max_length=32),
            validators=[validate_rate_limits],
            **kwargs,
        )


class KeySerializer(serializers.ModelSerializer):
    class Meta:
        model = ApiKey
        fields = ["id", "kind", "name", "prefix", "created_at", "revoked_at"]


class TenantSerializer(serializers.ModelSerializer):
    suspended = serializers.SerializerMethodField()
    rate_limits = RateLimitsField()

    class Meta:
        model = Tenant
        fields = ["slug", "suspended", "created_at", *SETTINGS_FIELDS]

    def get_suspended(self, tenant: Tenant) -> bool:
        return not tenant.is_active


class TenantDetailSerializer(TenantSerializer):
    keys = KeySerializer(many=True, read_only=True, help_text="Revoked ones too.")

    class Meta(TenantSerializer.Meta):
        fields = [*TenantSerializer.Meta.fields, "keys"]


class TenantCreatedSerializer(TenantDetailSerializer):
    publishable_key = serializers.CharField(help_text="Shown once.")
    secret_key = serializers.CharField(help_text="Shown once.")
    jwt_secret = serializers.CharField(
        help_text="Signs the tenant's user tokens (HS256). Shown once."
    )

    class Meta(TenantDetailSerializer.Meta):
        fields = [
            *TenantDetailSerializer.Meta.fields,
            "publishable_key",
            "secret_key",
            "jwt_secret",
        ]


def _operator(request: Request) -> Operator:
    assert isinstance(request.auth, Operator)
    return request.auth


def _writer(request: Request) -> dict[str, Any]:
    """Who a service records as the author of a write."""
    operator = _operator(request)
    return {"actor": operator.actor, "ip": operator.ip}


class TenantOneApi(OperatorApi):
    """A view about one tenant, found by the slug in its path."""

    def find(self, slug: str) -> Tenant:
        self.tenant = tenant_by_slug(slug=slug)
        return self.tenant

    def detail(self, tenant: Tenant) -> Response:
        return Response(TenantDetailSerializer(tenant).data)


class TenantsApi(OperatorApi):
    """GET: tenants by slug, a page at a time. POST: a new tenant and its keys."""

    class ListInputSerializer(serializers.Serializer):
        after = serializers.RegexField(
            SLUG_RE, required=False, help_text="The last slug of the previous page."
        )
        limit = serializers.IntegerField(min_value=1, max_value=PAGE_MAX, default=100)

    class ListOutputSerializer(serializers.Serializer):
        tenants = TenantSerializer(many=True)
        next_after = serializers.CharField(
            allow_null=True, help_text="Pass as `after` for the next page; null: done."
        )

    class CreateInputSerializer(StrictSerializer):
        name = serializers.CharField(max_length=200)
        slug = serializers.RegexField(
            SLUG_RE,
            required=False,
            error_messages={
                "invalid": "Lowercase letters, digits and '-', 1 to 63, "
                "starting with a letter or digit."
            },
            help_text="URL-safe id; derived from the name when absent.",
        )

    @extend_schema(
        operation_id="tenants_list",
        tags=TAGS,
        parameters=[ListInputSerializer],
        responses=ListOutputSerializer,
    )
    def get(self, request: Request) -> Response:
        params = self.ListInputSerializer(data=request.query_params.dict())
        params.is_valid(raise_exception=True)
        limit = params.validated_data["limit"]
        rows = tenants_page(after=params.validated_data.get("after"), limit=limit)
        return Response(
            {
                "tenants": TenantSerializer(rows, many=True).data,
                "next_after": rows[-1].slug if len(rows) == limit else None,
            }
        )

    @extend_schema(
        operation_id="tenants_create",
        tags=TAGS,
        request=CreateInputSerializer,
        responses={201: TenantCreatedSerializer},
        description="The answer holds the keys and the JWT secret: they are "
        "shown this once, never again.",
    )
    def post(self, request: Request) -> Response:
        body = self.CreateInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        creds = services.tenant_create(**body.validated_data, **_writer(request))
        self.tenant = creds.tenant
        shown_once = {
            "publishable_key": creds.publishable_key,
            "secret_key": creds.secret_key,
            "jwt_secret": creds.tenant.jwt_secret,
        }
        return Response(
            {**TenantDetailSerializer(creds.tenant).data, **shown_once},
            status=status.HTTP_201_CREATED,
        )


class TenantApi(TenantOneApi):
    """GET: one tenant and its keys (never their values). PATCH: its settings."""

    class UpdateInputSerializer(StrictSerializer, serializers.ModelSerializer):
        rate_limits = RateLimitsField(required=False)

        class Meta:
            model = Tenant
            fields = list(SETTINGS_FIELDS)
            extra_kwargs = {
                **{f: {"max_value": LIMIT_MAX} for f in SETTINGS_FIELDS if "max_" in f},
                "change_retention_hours": {"max_value": RETENTION_HOURS_MAX},
            }

    @extend_schema(
        operation_id="tenants_retrieve",
        tags=TAGS,
        responses=TenantDetailSerializer,
    )
    def get(self, request: Request, slug: str) -> Response:
        return self.detail(self.find(slug))

    @extend_schema(
        operation_id="tenants_update",
        tags=TAGS,
        request=UpdateInputSerializer,
        responses=TenantDetailSerializer,
        description="Only the fields given change. REST rate limits apply at "
        "once; socket limits to sockets that connect afterwards (an open socket "
        "keeps the limits it connected with until it reconnects).",
    )
    def patch(self, request: Request, slug: str) -> Response:
        tenant = self.find(slug)
        body = self.UpdateInputSerializer(tenant, data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        if not body.validated_data:
            raise InvalidInput(
                f"Nothing to update; give one of {', '.join(SETTINGS_FIELDS)}"
            )
        services.tenant_update(
            tenant=tenant, changes=dict(body.validated_data), **_writer(request)
        )
        return self.detail(tenant)


class TenantSuspendApi(TenantOneApi):
    @extend_schema(
        operation_id="tenants_suspend",
        tags=TAGS,
        request=None,
        responses=TenantDetailSerializer,
        description="Its sockets close now with RealtimeDisabledForTenant; new "
        "connects, joins, publishes and REST calls are refused until resumed.",
    )
    def post(self, request: Request, slug: str) -> Response:
        tenant = services.tenant_suspend(tenant=self.find(slug), **_writer(request))
        return self.detail(tenant)


class TenantResumeApi(TenantOneApi):
    @extend_schema(
        operation_id="tenants_resume",
        tags=TAGS,
        request=None,
        responses=TenantDetailSerializer,
    )
    def post(self, request: Request, slug: str) -> Response:
        tenant = services.tenant_resume(tenant=self.find(slug), **_writer(request))
        return self.detail(tenant)


class TenantJwtSecretApi(TenantOneApi):
    class OutputSerializer(serializers.Serializer):
        slug = serializers.CharField()
        jwt_secret = serializers.CharField(help_text="The new secret. Shown once.")

    @extend_schema(
        operation_id="tenants_rotate_jwt_secret",
        tags=TAGS,
        request=None,
        responses=OutputSerializer,
        description="Tokens signed with the old secret are refused from now on. "
        "Every socket of the tenant is closed; clients reconnect with their key "
        "and join with tokens signed with the new secret.",
    )
    def post(self, request: Request, slug: str) -> Response:
        tenant = services.tenant_jwt_secret_rotate(
            tenant=self.find(slug), **_writer(request)
        )
        return Response({"slug": tenant.slug, "jwt_secret": tenant.jwt_secret})


class TenantKeysApi(TenantOneApi):
    class InputSerializer(StrictSerializer):
        kind = serializers.ChoiceField(choices=KEY_KINDS)
        name = serializers.CharField(
            max_length=100, required=False, default="", allow_blank=True
        )

    class OutputSerializer(KeySerializer):
        key = serializers.CharField(help_text="The key itself. Shown once.")

        class Meta(KeySerializer.Meta):
            fields = [*KeySerializer.Meta.fields, "key"]

    @extend_schema(
        operation_id="tenants_keys_create",
        tags=TAGS,
        request=InputSerializer,
        responses={201: OutputSerializer},
    )
    def post(self, request: Request, slug: str) -> Response:
        tenant = self.find(slug)
        body = self.InputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        key, raw = services.api_key_create(
            tenant=tenant, **body.validated_data, **_writer(request)
        )
        return Response(
            {**KeySerializer(key).data, "key": raw}, status=status.HTTP_201_CREATED
        )


class TenantKeyApi(TenantOneApi):
    @extend_schema(
        operation_id="tenants_keys_revoke",
        tags=TAGS,
        responses={
            200: KeySerializer,
            409: OpenApiResponse(description="The key was revoked already."),
        },
        description="The key stops authenticating now; sockets opened or "
        "channels joined with it are closed.",
    )
    def delete(self, request: Request, slug: str, key_id: int) -> Response:
        key = tenant_key(tenant=self.find(slug), key_id=key_id)
        if key.revoked_at is not None:
            raise Conflict(f"The key was revoked at {key.revoked_at.isoformat()}")
        services.api_key_revoke(key=key, **_writer(request))
        return Response(KeySerializer(key).data)


class TenantHealthApi(TenantOneApi):
    class OutputSerializer(serializers.Serializer):
        slug = serializers.CharField()
        healthy = serializers.BooleanField(
            help_text="The database and channel layer answer; not suspended."
        )
        suspended = serializers.BooleanField()
        database = serializers.ChoiceField(choices=CHECK_STATES)
        channel_layer = serializers.ChoiceField(choices=CHECK_STATES)
        connections = serializers.IntegerField(help_text="Open sockets, all nodes.")
        channels = serializers.IntegerField(help_text="Channels joined on them.")
        durable_subscriptions = serializers.IntegerField()
        deliveries_last_minute = serializers.IntegerField()
        refusals_last_hour = serializers.IntegerField()
        last_activity_at = serializers.DateTimeField(allow_null=True)
        last_change_at = serializers.DateTimeField(allow_null=True)

    @extend_schema(
        operation_id="tenants_health",
        tags=TAGS,
        responses=OutputSerializer,
    )
    def get(self, request: Request, slug: str) -> Response:
        health = tenant_health(tenant=self.find(slug))
        return Response(self.OutputSerializer(health).data)
