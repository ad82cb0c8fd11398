"""ASGI entry point of the naive design: Herald's HTTP API, the naive socket.

Served by daphne exactly as `config.asgi` is, so publishing (POST /api/changes)
and the channel layer are the same; only the WebSocket consumer differs.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from django.core.asgi import get_asgi_application

# Django must be set up before anything imports models (channels' advice).
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from benchmarks.naive import NaiveConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": URLRouter(
            [
                path("realtime/v1/websocket", NaiveConsumer.as_asgi()),
                path("socket/websocket", NaiveConsumer.as_asgi()),
            ]
        ),
    }
)
