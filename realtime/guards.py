"""The per-tenant limits a socket is held to (SPEC §10.1), as a consumer mixin.

Connections per tenant and per user and joins per second are counted across
every process (Redis when configured); messages per second are counted per
connection, in the process that holds it.
"""

from __future__ import annotations

import time
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer

from audit.models import EventType
from realtime import metrics
from realtime.auth import Principal
from realtime.db import best_effort
from realtime.hub import hub
from realtime.protocol import PHOENIX_TOPIC, reply
from realtime.services.sockets import refusal_record

# Closing codes of our own (daphne lets applications use 3000-4999).
CLOSE_LIMIT = 4029


class LimitReached(Exception):
    """A limit was reached; `reason` is Supabase's "Code: message" text."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class GuardsMixin(AsyncWebsocketConsumer):
    principal: Principal
    ip: str | None
    _holds: list[str]
    _window: tuple[int, int] = (0, 0)

    async def send_message(self, message: Any) -> None:
        raise NotImplementedError

    async def limit_record(self, reason: str, target: str = "") -> None:
        await best_effort(
            refusal_record,
            event_type=EventType.RATE_LIMITED,
            reason=reason,
            principal=self.principal,
            target=target,
            ip=self.ip,
        )

    async def hold_connection(self) -> bool:
        """Count this socket against its tenant's and user's limits, or refuse it."""
        tenant, sub = self.principal.tenant, self.principal.sub
        self._holds = []
        wanted = [(f"conn:{tenant.pk}", tenant.max_concurrent_users, "connected users")]
        if sub:
            key = f"conn:{tenant.pk}:u:{sub}"
            wanted.append(
                (key, tenant.max_connections_per_user, "connections for this user")
            )
        for key, limit, what in wanted:
            if not await hub().hold(key, limit):
                await self.release_connection()
                reason = f"ConnectionRateLimitReached: Too many {what}"
                metrics.REFUSALS.labels(tenant.slug, "connections").inc()
                await self.limit_record(reason)
                await self.send_message(
                    reply(PHOENIX_TOPIC, None, None, "error", {"reason": reason})
                )
                await self.close(code=CLOSE_LIMIT)
                return False
            self._holds.append(key)
        return True

    async def release_connection(self) -> None:
        for key in getattr(self, "_holds", []):
            await hub().release(key)
        self._holds = []

    async def check_join_rate(self, principal: Principal, topic: str) -> None:
        tenant = principal.tenant
        if not await hub().counters.hit(
            f"joins:{tenant.pk}", tenant.max_joins_per_second
        ):
            reason = "ClientJoinRateLimitReached: Too many joins per second"
            await self.limit_record(reason, topic)
            raise LimitReached(reason)

    async def check_presence_rate(self, principal: Principal, topic: str) -> None:
        tenant = principal.tenant
        limit = tenant.max_presence_events_per_second
        if not await hub().counters.hit(f"presence:{tenant.pk}", limit):
            reason = "Too many presence messages per second"
            await self.limit_record(reason, topic)
            raise LimitReached(reason)

    def within_message_rate(self) -> bool:
        """Count one client message in this connection's one-second window."""
        second, count = self._window
        now = int(time.monotonic())
        count = count + 1 if now == second else 1
        self._window = (now, count)
        return count <= self.principal.tenant.max_events_per_second
