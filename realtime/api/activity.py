"""GET /api/activity: a tenant reads its own activity log (secret key)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.models import ActivityLog, EventType
from audit.selectors import activity_page
from realtime.api.permissions import IsSecretKey, principal_of


class ActivityApi(APIView):
    """The tenant's activity, newest first; follow `next_before` for older rows."""

    permission_classes = [IsSecretKey]
    rate_scope = "read"

    class InputSerializer(serializers.Serializer):
        before = serializers.IntegerField(min_value=1, required=False)
        event = serializers.ChoiceField(
            choices=[e.name.lower() for e in EventType], required=False
        )
        limit = serializers.IntegerField(min_value=1, max_value=500, default=100)

    class EntrySerializer(serializers.ModelSerializer):
        event = serializers.SerializerMethodField()

        class Meta:
            model = ActivityLog
            fields = [
                "id",
                "created_at",
                "event",
                "actor",
                "role",
                "target",
                "ip",
                "details",
            ]

        def get_event(self, row: ActivityLog) -> str:
            return EventType(row.event_type).name.lower()

    class OutputSerializer(serializers.Serializer):
        activity = serializers.ListField(child=serializers.DictField())
        next_before = serializers.IntegerField(allow_null=True)

    @extend_schema(parameters=[InputSerializer], responses=OutputSerializer)
    def get(self, request: Request) -> Response:
        params = self.InputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        event: Any = params.validated_data.get("event")
        rows = activity_page(
            tenant=principal_of(request).tenant,
            before=params.validated_data.get("before"),
            event_type=EventType[event.upper()] if event else None,
            limit=params.validated_data["limit"],
        )
        entries = self.EntrySerializer(rows, many=True).data
        full = len(rows) == params.validated_data["limit"]
        return Response(
            {"activity": entries, "next_before": rows[-1].pk if rows and full else None}
        )
