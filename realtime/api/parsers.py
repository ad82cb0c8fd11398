"""JSON parsing with orjson and a hard cap on the body size."""

from __future__ import annotations

from typing import IO, Any

import orjson
from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser

from realtime.bounds import MAX_JSON_DEPTH, too_deep
from realtime.errors import InvalidInput, PayloadTooLarge


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
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ParseError(f"Malformed JSON: {exc}") from exc
        # Checked before any serializer walks it: records, metadata, payloads
        # and claims deeper than this could be stored but never delivered
        # (realtime/bounds.py says why).
        if too_deep(data):
            raise InvalidInput(
                f"The JSON body nests deeper than {MAX_JSON_DEPTH} levels of "
                "arrays and objects"
            )
        # PostgreSQL's jsonb cannot hold U+0000: refuse it here (400) rather than
        # fail at the insert (500). JSON can only carry it escaped, so the scan
        # runs only when the escape is in the body.
        if b"\\u0000" in body and _has_nul(data):
            raise ParseError("Malformed JSON: NUL characters (\\u0000) are not allowed")
        return data


def _has_nul(data: Any) -> bool:
    # Iterative: orjson nests up to 1024 levels, deeper than Python's recursion.
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return True
        elif isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return False


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
