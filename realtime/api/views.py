"""REST publishing: content events and table changes (secret keys only)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from realtime.api.permissions import IsServiceRole, principal_of
from realtime.api.schema import ONE_OR_MANY
from realtime.api.serializers import ScalarField
from realtime.client_ip import request_client_ip
from realtime.errors import InvalidInput
from realtime.layer import commit_timestamp
from realtime.models import LiveUpdate
from realtime.services.changes import ChangeInput, content_event_publish
from realtime.services.conflicts import (
    PublishOutcome,
    Version,
    VersionedChange,
    changes_publish_versioned,
)
from realtime.validators import is_identifier

CONTENT_EVENTS = [
    "content.created",
    "content.updated",
    "content.published",
    "content.deleted",
]


def change_output(update: LiveUpdate) -> dict[str, Any]:
    return {
        "seq": update.pk,
        "table": update.table,
        "type": update.type,
        "commit_timestamp": commit_timestamp(update),
    }


class LiveUpdatePublishApi(APIView):
    """POST /api/live-updates: a content event, an INSERT on `live_updates`."""

    permission_classes = [IsServiceRole]
    rate_scope = "publish"

    class InputSerializer(serializers.Serializer):
        site_id = ScalarField()
        event_type = serializers.ChoiceField(choices=CONTENT_EVENTS)
        collection = serializers.CharField(max_length=100)
        slug = serializers.CharField(
            max_length=255, required=False, allow_null=True, allow_blank=True
        )
        item_id = ScalarField()
        metadata = serializers.DictField(required=False, default=dict)

    class OutputSerializer(serializers.Serializer):
        seq = serializers.IntegerField()
        table = serializers.CharField()
        type = serializers.CharField()
        commit_timestamp = serializers.CharField()
        record = serializers.DictField()

    @extend_schema(
        operation_id="live_updates_publish",
        description="A content event, recorded as an INSERT on table "
        "`live_updates` (secret key).",
        request=InputSerializer,
        responses={201: OutputSerializer},
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        update = content_event_publish(
            principal=principal_of(request),
            event=serializer.validated_data,
            ip=request_client_ip(request),
        )
        return Response(
            self.OutputSerializer(
                {**change_output(update), "record": update.record}
            ).data,
            status=status.HTTP_201_CREATED,
        )


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "format": "date-time"},
            {"type": "number", "minimum": 0, "description": "epoch milliseconds"},
        ]
    }
)
class TimestampField(serializers.Field):
    """An ISO 8601 date-time (UTC when naive) or epoch milliseconds."""

    default_error_messages = {
        "invalid": "Must be an ISO 8601 date-time or epoch milliseconds."
    }

    def to_internal_value(self, data: Any) -> datetime:
        if isinstance(data, int | float) and not isinstance(data, bool):
            try:
                return datetime.fromtimestamp(data / 1000, tz=UTC)
            except (OverflowError, OSError, ValueError):
                self.fail("invalid")
        parsed = None
        if isinstance(data, str):
            try:
                parsed = parse_datetime(data)
            except ValueError:
                parsed = None
        if parsed is None:
            self.fail("invalid")
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

    def to_representation(self, value: datetime) -> str:
        return value.isoformat()


class VersionSerializer(serializers.Serializer):
    updated_at = TimestampField()
    device_id = serializers.CharField(
        max_length=255, required=False, default="", allow_blank=True
    )


def change_outcome(outcome: PublishOutcome) -> dict[str, Any]:
    if outcome.update is not None:
        return {**change_output(outcome.update), "status": "published"}
    assert outcome.current is not None
    return {
        "seq": None,
        "table": outcome.change.table,
        "type": outcome.change.type,
        "commit_timestamp": None,
        "status": "stale",
        "current_version": {
            "updated_at": outcome.current.updated_at,
            "device_id": outcome.current.device_id,
        },
    }


class ChangePublishApi(APIView):
    """POST /api/changes: one change or a list of them, all or nothing.

    A change carrying a `version` older than the last one published for the
    same record (`table` and primary key `record[pk]`) is stale: refused, not
    delivered (last write wins).
    """

    permission_classes = [IsServiceRole]
    rate_scope = "publish"

    class InputSerializer(serializers.Serializer):
        table = serializers.CharField(max_length=63)
        type = serializers.ChoiceField(choices=LiveUpdate.Type.values)
        record = serializers.DictField(required=False, allow_null=True)
        old_record = serializers.DictField(required=False, allow_null=True)
        version = VersionSerializer(
            required=False,
            allow_null=True,
            help_text="Drop this change if a newer version of the record was "
            "published (ties: the greater device_id wins).",
        )
        pk = serializers.CharField(
            max_length=63,
            required=False,
            default="id",
            help_text="The primary-key column of `record` (default `id`).",
        )

        def validate_pk(self, value: str) -> str:
            if not is_identifier(value):
                raise serializers.ValidationError("Must be a plain identifier.")
            return value

    class OutputSerializer(serializers.Serializer):
        class ChangeOutcomeSerializer(serializers.Serializer):
            seq = serializers.IntegerField(allow_null=True)
            table = serializers.CharField()
            type = serializers.CharField()
            commit_timestamp = serializers.CharField(allow_null=True)
            status = serializers.ChoiceField(choices=["published", "stale"])
            current_version = VersionSerializer(
                required=False, help_text="For a stale change: the version that won."
            )

        changes = ChangeOutcomeSerializer(many=True)

    @extend_schema(
        operation_id="changes_publish",
        request=InputSerializer,
        responses={201: OutputSerializer, 200: OutputSerializer},
        description="One change or a list of them. 201 when at least one change "
        "was published; 200 when every change was stale.",
        extensions={ONE_OR_MANY: True},
    )
    def post(self, request: Request) -> Response:
        items = request.data if isinstance(request.data, list) else [request.data]
        if not items:
            raise InvalidInput("The body must hold at least one change")
        if len(items) > settings.HERALD_MAX_BATCH:
            raise InvalidInput(
                f"At most {settings.HERALD_MAX_BATCH} changes per request"
            )
        serializer = self.InputSerializer(data=items, many=True)
        serializer.is_valid(raise_exception=True)
        outcomes = changes_publish_versioned(
            principal=principal_of(request),
            items=[_versioned(item) for item in serializer.validated_data],
            ip=request_client_ip(request),
        )
        published = any(not o.stale for o in outcomes)
        return Response(
            self.OutputSerializer(
                {"changes": [change_outcome(o) for o in outcomes]}
            ).data,
            status=status.HTTP_201_CREATED if published else status.HTTP_200_OK,
        )


def _versioned(item: dict[str, Any]) -> VersionedChange:
    version = item.pop("version", None)
    pk_column = item.pop("pk", "id")
    return VersionedChange(
        change=ChangeInput(**item),
        version=Version(version["updated_at"], version["device_id"])
        if version
        else None,
        pk_column=pk_column,
    )
