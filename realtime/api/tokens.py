"""POST /api/tokens: a secret key mints a short-lived user token."""

from __future__ import annotations

import logging

import jwt
from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from realtime.api.permissions import IsSecretKey, principal_of
from realtime.auth import token_mint

logger = logging.getLogger(__name__)

# Set by Herald itself; a caller naming them in `claims` is refused.
RESERVED_CLAIMS = frozenset({"role", "sub", "ref", "exp", "iat", "nbf"})


class TokenMintApi(APIView):
    """A JWT signed with the tenant's secret, with the given `sub`, role and claims."""

    permission_classes = [IsSecretKey]
    rate_scope = "tokens"

    class InputSerializer(serializers.Serializer):
        sub = serializers.CharField(max_length=255, required=False)
        role = serializers.CharField(max_length=63, default="authenticated")
        claims = serializers.DictField(
            required=False,
            default=dict,
            help_text="More claims for the row and channel policies, e.g. "
            '{"site_id": 42}.',
        )
        ttl = serializers.IntegerField(
            min_value=1,
            max_value=settings.HERALD_TOKEN_MAX_TTL,
            default=settings.HERALD_TOKEN_TTL,
            help_text="Lifetime in seconds.",
        )

        def validate_claims(self, value: dict) -> dict:
            reserved = sorted(RESERVED_CLAIMS & set(value))
            if reserved:
                raise serializers.ValidationError(
                    f"{reserved[0]!r} is set by Herald; use the field of that name"
                    if reserved[0] in ("role", "sub")
                    else f"{reserved[0]!r} is set by Herald"
                )
            return value

    class OutputSerializer(serializers.Serializer):
        access_token = serializers.CharField()
        token_type = serializers.CharField()
        expires_in = serializers.IntegerField()
        expires_at = serializers.IntegerField(help_text="Unix time.")

    @extend_schema(
        operation_id="tokens_mint",
        request=InputSerializer,
        responses={201: OutputSerializer},
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        principal = principal_of(request)
        token = token_mint(
            tenant=principal.tenant,
            role=data["role"],
            sub=data.get("sub"),
            claims=data["claims"],
            ttl=data["ttl"],
        )
        logger.info(
            "Token minted by %s for %s (role %s, ttl %s)",
            principal.actor,
            data.get("sub", "-"),
            data["role"],
            data["ttl"],
        )
        exp = jwt.decode(token, options={"verify_signature": False})["exp"]
        output = {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": data["ttl"],
            "expires_at": exp,
        }
        return Response(
            self.OutputSerializer(output).data, status=status.HTTP_201_CREATED
        )
