"""JSON parsing with orjson and a hard cap on the body size."""

from __future__ import annotations

from typing import IO, Any

import orjson
from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser

from realtime.errors import PayloadTooLarge


class JSONParser(BaseParser):
    media_type = "application/json"

    def parse(
        self,
        stream: IO[bytes],
        media_type: str | None = None,
        parser_context: Any = None,
    ) -> Any:
        limit = settings.HERALD_MAX_BODY_BYTES
        # Read one byte past the limit so a chunked body without Content-Length
        # is caught too, without ever holding more than the limit.
        body = stream.read(limit + 1) if stream is not None else b""
        if len(body) > limit:
            raise PayloadTooLarge(f"The body is larger than {limit} bytes")
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ParseError(f"Malformed JSON: {exc}") from exc


class OctetStreamParser(BaseParser):
    """A raw binary body, kept as bytes (Supabase's binary broadcast)."""

    media_type = "application/octet-stream"

    def parse(
        self,
        stream: IO[bytes],
        media_type: str | None = None,
        parser_context: Any = None,
    ) -> Any:  # bytes; the stubs only know mappings
        limit = settings.HERALD_MAX_BODY_BYTES
        body = stream.read(limit + 1) if stream is not None else b""
        if len(body) > limit:
            raise PayloadTooLarge(f"The body is larger than {limit} bytes")
        return body
