"""`/healthz`: the database and the channel layer both answer."""

from __future__ import annotations

import asyncio
import logging

from asgiref.sync import async_to_sync
from django.db import connection
from django.http import HttpRequest, JsonResponse

from realtime.layer import layer

logger = logging.getLogger(__name__)
LAYER_TIMEOUT = 2.0


def database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    except Exception:
        logger.exception("Health check: the database does not answer")
        return False


async def _layer_round_trip() -> bool:
    channel_layer = layer()
    channel = await channel_layer.new_channel()
    await channel_layer.send(channel, {"type": "health.ping"})
    message = await asyncio.wait_for(channel_layer.receive(channel), LAYER_TIMEOUT)
    return message.get("type") == "health.ping"


def layer_ok() -> bool:
    try:
        return async_to_sync(_layer_round_trip)()
    except Exception:
        logger.exception("Health check: the channel layer does not answer")
        return False


def healthz(request: HttpRequest) -> JsonResponse:
    checks = {"database": database_ok(), "channel_layer": layer_ok()}
    healthy = all(checks.values())
    return JsonResponse(
        {"status": "ok" if healthy else "unavailable"}
        | {name: "ok" if ok else "down" for name, ok in checks.items()},
        status=200 if healthy else 503,
    )
