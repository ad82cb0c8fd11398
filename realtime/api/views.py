"""REST publishing: content events and table changes (secret keys only)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from realtime.api.permissions import IsServiceRole, principal_of
from realtime.api.serializers import ScalarField
from realtime.errors import InvalidInput
from realtime.layer import commit_timestamp
from realtime.models import LiveUpdate
from realtime.services.changes import (
    ChangeInput,
    changes_publish,
    content_event_publish,
)

CONTENT_EVENTS = [
    "content.created",
    "content.updated",
    "content.published",
    "content.deleted",
]


def client_ip(request: Request) -> str | None:
    return request.META.get("REMOTE_ADDR") or None


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

    class InputSerializer(serializers.Serializer):
        site_id = ScalarField()
        event_type = serializers.ChoiceField(choices=CONTENT_EVENTS)
        collection = serializers.CharField(max_length=100)
        slug = serializers.CharField(
            max_length=255, required=False, allow_null=True, allow_blank=True
        )
        item_id = ScalarField()
        metadata = serializers.DictField(required=False, default=dict)

    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        update = content_event_publish(
            principal=principal_of(request),
            event=serializer.validated_data,
            ip=client_ip(request),
        )
        return Response(
            {**change_output(update), "record": update.record},
            status=status.HTTP_201_CREATED,
        )


class ChangePublishApi(APIView):
    """POST /api/changes: one change or a list of them, all or nothing."""

    permission_classes = [IsServiceRole]

    class InputSerializer(serializers.Serializer):
        table = serializers.CharField(max_length=63)
        type = serializers.ChoiceField(choices=LiveUpdate.Type.values)
        record = serializers.DictField(required=False, allow_null=True)
        old_record = serializers.DictField(required=False, allow_null=True)

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
        changes = [ChangeInput(**item) for item in serializer.validated_data]
        created = changes_publish(
            principal=principal_of(request), changes=changes, ip=client_ip(request)
        )
        return Response(
            {"changes": [change_output(u) for u in created]},
            status=status.HTTP_201_CREATED,
        )
