"""GET /api/live-updates: catch-up and polling over the change log."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from realtime.api.permissions import IsServiceRoleToWrite, principal_of
from realtime.api.serializers import ChangePageSerializer
from realtime.api.views import LiveUpdatePublishApi
from realtime.change_log import Reader, changes_after, cursor_check
from realtime.layer import change_data
from realtime.validators import validate_identifier

MAX_CURSOR = 2**63 - 1


class LiveUpdateCatchUpApi(APIView):
    """Every change after a cursor the principal may see, in cursor order."""

    rate_scope = "read"

    class QuerySerializer(serializers.Serializer):
        since = serializers.IntegerField(
            min_value=0,
            max_value=MAX_CURSOR,
            default=0,
            help_text="The cursor (`seq`) of the last change the client has.",
        )
        table = serializers.CharField(
            max_length=63,
            required=False,
            validators=[validate_identifier],
            help_text="Only this table (default: every table).",
        )
        limit = serializers.IntegerField(
            min_value=1, max_value=settings.HERALD_CATCH_UP_MAX_LIMIT, default=100
        )

    @extend_schema(
        operation_id="live_updates_catch_up",
        description="Every change after `since` that the caller's row policies "
        "let it see, in cursor order; follow `next_cursor` while `has_more`. At "
        "most HERALD_CATCH_UP_MAX_SCAN rows are read per request.",
        parameters=[QuerySerializer],
        responses={
            200: ChangePageSerializer,
            410: OpenApiResponse(
                description="Changes after `since` were deleted by retention: reload."
            ),
        },
    )
    def get(self, request: Request) -> Response:
        query = self.QuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        principal = principal_of(request)
        cursor_check(tenant=principal.tenant, cursor=params["since"])
        page = changes_after(
            reader=Reader(
                tenant_id=principal.tenant.pk,
                role=principal.role,
                claims=principal.claims,
            ),
            after=params["since"],
            limit=params["limit"],
            tables=[params["table"]] if "table" in params else None,
        )
        output = ChangePageSerializer(
            {
                "changes": [change_data(u) for u in page.changes],
                "next_cursor": page.next_cursor,
                "has_more": page.has_more,
            }
        )
        return Response(output.data)


class LiveUpdatesApi(LiveUpdateCatchUpApi, LiveUpdatePublishApi):
    """/api/live-updates: GET catches up (any principal), POST publishes (secret).

    DRF routes one path to one view class, so the two operations share it.
    """

    permission_classes = [IsServiceRoleToWrite]

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        # Per request (a view instance serves one): reads and publishes are
        # counted against different limits.
        self.rate_scope = "read" if request.method in SAFE_METHODS else "publish"
        super().initial(request, *args, **kwargs)
