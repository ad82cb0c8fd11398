"""Supabase's REST broadcast: batch, or one message to a topic and event."""

from __future__ import annotations

from django.conf import settings
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from realtime.api.parsers import JSONParser, OctetStreamParser
from realtime.api.permissions import principal_of
from realtime.client_ip import request_client_ip
from realtime.errors import InvalidInput
from realtime.services.broadcast import BroadcastInput, broadcasts_publish


class BroadcastBatchApi(APIView):
    """Broadcast a batch of messages to topics; 202 with an empty body."""

    rate_scope = "broadcast"

    class MessageSerializer(serializers.Serializer):
        topic = serializers.CharField(max_length=246)
        event = serializers.CharField(max_length=255)
        payload = serializers.JSONField(required=False, default=dict)
        private = serializers.BooleanField(required=False, default=False)
        id = serializers.CharField(required=False, max_length=255)

    class InputSerializer(serializers.Serializer):
        messages = serializers.ListField(allow_empty=False)

    def post(self, request: Request) -> Response:
        body = self.InputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        items = body.validated_data["messages"]
        if len(items) > settings.HERALD_MAX_BATCH:
            raise InvalidInput(
                "Too many messages to broadcast, please reduce the batch size "
                f"(at most {settings.HERALD_MAX_BATCH})"
            )
        messages = self.MessageSerializer(data=items, many=True)
        messages.is_valid(raise_exception=True)
        broadcasts_publish(
            principal=principal_of(request),
            messages=[BroadcastInput(**m) for m in messages.validated_data],
            ip=request_client_ip(request),
        )
        return Response(status=status.HTTP_202_ACCEPTED)


class BroadcastSingleApi(APIView):
    """Broadcast one message; the body is its payload (JSON, or raw bytes)."""

    parser_classes = [JSONParser, OctetStreamParser]
    rate_scope = "broadcast"

    def post(self, request: Request, topic: str, event: str) -> Response:
        data = request.data
        raw = bytes(data) if isinstance(data, bytes | bytearray) else None
        message = BroadcastInput(
            topic=topic,
            event=event,
            payload=None if raw is not None else data,
            raw=raw,
            private=request.query_params.get("private", "").lower() == "true",
        )
        broadcasts_publish(
            principal=principal_of(request),
            messages=[message],
            ip=request_client_ip(request),
        )
        return Response(status=status.HTTP_202_ACCEPTED)
