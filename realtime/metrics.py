"""Prometheus metrics of this process, served at `/metrics`.

Each server process keeps its own figures (scrape every process, as with any
multi-process deployment); per-tenant labels use the tenant's slug. On the
delivery path, counters move once per audience, never once per socket.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from realtime.api.errors import error_json
from realtime.capture.skipped import SkippedRowsCollector
from realtime.client_ip import is_loopback, request_client_ip

CONNECTIONS = Gauge(
    "herald_connections", "Open WebSocket connections in this process", ["tenant"]
)
JOINS = Counter("herald_joins_total", "Channels joined", ["tenant"])
DELIVERIES = Counter(
    "herald_deliveries_total",
    "Frames written to sockets",
    ["tenant", "kind"],  # kind: change, broadcast, presence
)
DROPS = Counter(
    "herald_drops_total",
    "Messages this process could not deliver (a failed fan-out)",
    ["kind"],
)
REFUSALS = Counter(
    "herald_refusals_total",
    "Refused connections, joins and messages",
    ["tenant", "reason"],
)
FAILURES = Counter(
    "herald_handler_failures_total",
    "Frames whose handler failed: what it held was released, the client told",
    ["tenant"],
)
SLOW_CLOSED = Counter(
    "herald_slow_consumers_closed_total",
    "Sockets closed for not reading: their outgoing buffer passed the limit",
    ["tenant"],
)
DELIVERY_LATENCY = Histogram(
    "herald_delivery_latency_seconds",
    "From a change's commit to its frames written to every local socket",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

# Read from the database at scrape time: the triggers count, not this process.
REGISTRY.register(SkippedRowsCollector())


def refusal_kind(reason: str) -> str:
    """A bounded label from a refusal's text: its code, or the text itself."""
    code, sep, _ = reason.partition(":")
    return code if sep else reason[:60]


def scraper_allowed(request: HttpRequest) -> bool:
    """HERALD_METRICS_TOKEN as a bearer token when set; else loopback only.

    Loopback is the client as resolved through trusted proxies: a remote
    client forwarded by a local proxy is not loopback.
    """
    token = settings.HERALD_METRICS_TOKEN
    if token:
        given = request.META.get("HTTP_AUTHORIZATION", "").removeprefix("Bearer ")
        return hmac.compare_digest(given.encode(), token.encode())
    return is_loopback(request_client_ip(request))


def metrics_view(request: HttpRequest) -> HttpResponse:
    if not scraper_allowed(request):
        return error_json(
            "forbidden", "Set HERALD_METRICS_TOKEN to scrape remotely", 403
        )
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
