"""Durable subscriptions over REST: subscribe, unsubscribe, poll, status."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from realtime.api.catch_up import MAX_CURSOR
from realtime.api.permissions import principal_of
from realtime.api.serializers import ChangePageSerializer, ScalarField
from realtime.client_ip import request_client_ip
from realtime.errors import NotFound
from realtime.layer import change_data
from subscriptions.durable import (
    WebhookTarget,
    durable_subscription_create,
    durable_subscription_poll,
    durable_subscriptions_close,
)
from subscriptions.selectors import principal_status
from subscriptions.targets import EVENTS, ChannelRequest


class BindingSerializer(serializers.Serializer):
    """An inline binding, as a socket's postgres_changes one."""

    table = serializers.CharField(max_length=63)
    filter = serializers.CharField(
        max_length=1000, required=False, default="", allow_blank=True
    )
    event = serializers.ChoiceField(choices=EVENTS, required=False, default="*")


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "description": "A channel defined by the tenant."},
            {
                "type": "object",
                "description": "An inline binding, as a socket's postgres_changes.",
                "properties": {
                    "table": {"type": "string", "maxLength": 63},
                    "filter": {"type": "string", "maxLength": 1000},
                    "event": {"type": "string", "enum": list(EVENTS)},
                },
                "required": ["table"],
            },
        ]
    }
)
class ChannelEntryField(serializers.Field):
    """A channel name, or an inline binding `{table, filter?, event?}`."""

    default_error_messages = {
        "invalid": "Must be a channel name or an object {{table, filter, event}}."
    }

    def to_internal_value(self, data: Any) -> ChannelRequest:
        if isinstance(data, str) and 0 < len(data) <= 100:
            return ChannelRequest(name=data)
        if not isinstance(data, dict):
            self.fail("invalid")
        binding = BindingSerializer(data=data)
        binding.is_valid(raise_exception=True)
        return ChannelRequest(**binding.validated_data)


class SubscriptionSerializer(serializers.Serializer):
    """A durable subscription as its owner sees it."""

    id = serializers.IntegerField()
    channel = serializers.CharField()
    status = serializers.CharField(source="state", help_text="active, paused, closed")
    filter = serializers.CharField(help_text="postgres_changes grammar; '' for none.")
    table = serializers.CharField()
    event = serializers.CharField()
    delivery = serializers.CharField(help_text="polling or webhook")
    cursor = serializers.IntegerField(help_text="Changes up to here were handed out.")
    delivered_count = serializers.IntegerField()
    last_delivered_at = serializers.DateTimeField(allow_null=True)
    failure_count = serializers.IntegerField()
    last_error = serializers.CharField(allow_blank=True)
    next_attempt_at = serializers.DateTimeField(allow_null=True)


class SubscribeApi(APIView):
    """Durable subscriptions for the caller, delivered by polling or webhook."""

    rate_scope = "subscribe"

    class InputSerializer(serializers.Serializer):
        class WebhookSerializer(serializers.Serializer):
            url = serializers.URLField(max_length=2000)
            secret = serializers.CharField(
                min_length=16,
                max_length=255,
                help_text="Signs each delivery (Herald-Signature).",
            )

        channels = serializers.ListField(
            child=ChannelEntryField(), min_length=1, max_length=100
        )
        filters = serializers.DictField(
            child=ScalarField(),
            required=False,
            default=dict,
            help_text="Values for the channels' filter columns, "
            'e.g. {"supplier_id": "s-1"}.',
        )
        webhook = WebhookSerializer(required=False, allow_null=True)

    class OutputSerializer(serializers.Serializer):
        success = serializers.BooleanField()
        subscriptions = SubscriptionSerializer(many=True)

    @extend_schema(
        operation_id="realtime_subscribe",
        request=InputSerializer,
        responses={
            200: OutputSerializer,
            403: OpenApiResponse(
                description="A caller naming nobody (a publishable key alone, a "
                "token without `sub`): a user token with `sub` is required, or a "
                "secret key. Or a filter value that is not the caller's claim, a "
                "table and filter no row policy lets its role see."
            ),
        },
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        webhook = data.get("webhook")
        opened = durable_subscription_create(
            principal=principal_of(request),
            channels=data["channels"],
            filters=data["filters"],
            webhook=WebhookTarget(**webhook) if webhook else None,
            ip=request_client_ip(request),
        )
        output = {"success": True, "subscriptions": opened}
        return Response(self.OutputSerializer(output).data)


class UnsubscribeApi(APIView):
    """Close durable subscriptions of the caller."""

    class InputSerializer(serializers.Serializer):
        ids = serializers.ListField(
            child=serializers.IntegerField(min_value=1, max_value=MAX_CURSOR),
            min_length=1,
            max_length=100,
        )

    class OutputSerializer(serializers.Serializer):
        success = serializers.BooleanField()
        unsubscribed = serializers.ListField(child=serializers.IntegerField())

    @extend_schema(
        operation_id="realtime_unsubscribe",
        request=InputSerializer,
        responses={
            200: OutputSerializer,
            404: OpenApiResponse(
                description="An id that is not a subscription of "
                "yours (nothing is closed)."
            ),
        },
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        closed = durable_subscriptions_close(
            principal=principal_of(request),
            ids=serializer.validated_data["ids"],
            ip=request_client_ip(request),
        )
        output = {"success": True, "unsubscribed": closed}
        return Response(self.OutputSerializer(output).data)


class SubscriptionChangesApi(APIView):
    """Poll a subscription: the changes after a cursor that the caller may see."""

    rate_scope = "read"

    class QuerySerializer(serializers.Serializer):
        after = serializers.IntegerField(
            min_value=0,
            max_value=MAX_CURSOR,
            required=False,
            help_text="Default: the subscription's cursor (what was handed out).",
        )
        limit = serializers.IntegerField(
            min_value=1, max_value=settings.HERALD_CATCH_UP_MAX_LIMIT, default=100
        )

    class OutputSerializer(ChangePageSerializer):
        subscription = serializers.IntegerField()

    @extend_schema(
        operation_id="realtime_subscription_changes",
        parameters=[QuerySerializer],
        responses={
            200: OutputSerializer,
            409: OpenApiResponse(description="A webhook subscription: not polled."),
            410: OpenApiResponse(
                description="Changes after `after` were deleted by retention: reload."
            ),
        },
    )
    def get(self, request: Request, subscription_id: int) -> Response:
        if subscription_id > MAX_CURSOR:
            raise NotFound(f"No open subscription {subscription_id} of yours")
        query = self.QuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        subscription, page = durable_subscription_poll(
            principal=principal_of(request),
            subscription_id=subscription_id,
            after=query.validated_data.get("after"),
            limit=query.validated_data["limit"],
        )
        output = {
            "subscription": subscription.pk,
            "changes": [change_data(u) for u in page.changes],
            "next_cursor": page.next_cursor,
            "has_more": page.has_more,
        }
        return Response(self.OutputSerializer(output).data)


class StatusApi(APIView):
    """The caller's sockets, message counts and durable subscriptions."""

    rate_scope = "read"

    class OutputSerializer(serializers.Serializer):
        connected = serializers.BooleanField(
            help_text="At least one socket channel of yours is joined."
        )
        activeChannels = serializers.IntegerField(
            help_text="Socket channels of yours joined now."
        )
        messageCount = serializers.IntegerField(
            help_text="Messages delivered by your subscriptions (sockets and "
            "durable) that delivered any in the last 24 hours."
        )
        lastMessageAt = serializers.DateTimeField(allow_null=True)
        subscriptions = SubscriptionSerializer(many=True)

    @extend_schema(operation_id="realtime_status", responses={200: OutputSerializer})
    def get(self, request: Request) -> Response:
        status = principal_status(principal=principal_of(request))
        output = {
            "connected": status.connected,
            "activeChannels": status.active_channels,
            "messageCount": status.message_count,
            "lastMessageAt": status.last_message_at,
            "subscriptions": status.subscriptions,
        }
        return Response(self.OutputSerializer(output).data)
