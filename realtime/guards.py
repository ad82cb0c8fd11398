"""The per-tenant limits a socket is held to (docs/protocol.md §10), as a mixin.

Connections per tenant and per user and joins per second are counted across
every process (Redis when configured); messages per second are counted per
connection, in the process that holds it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer
from redis.exceptions import RedisError

from audit.models import EventType
from realtime import metrics
from realtime.auth import Principal
from realtime.db import best_effort
from realtime.hub import hub
from realtime.protocol import PHOENIX_TOPIC, reply
from realtime.services.sockets import refusal_record

logger = logging.getLogger(__name__)

# Closing codes of our own (daphne lets applications use 3000-4999).
CLOSE_LIMIT = 4029
# Heartbeats count toward messages per second, with this much room over the
# limit so that a client's 25-30 s beat never costs it a message.
HEARTBEAT_ROOM = 2
# Frames past the limit that are still answered in one second; past twice the
# limit plus this, the socket is closed.
FLOOD_ROOM = 100


class LimitReached(Exception):
    """A limit was reached; `reason` is Supabase's "Code: message" text."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class GuardsMixin(AsyncWebsocketConsumer):
    principal: Principal
    ip: str | None
    _holds: list[str]
    _user: str
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
        tenant = self.principal.tenant
        self._holds = []
        self._user = ""
        refusal = None
        if await hub().hold(f"conn:{tenant.pk}", tenant.max_concurrent_users):
            self._holds.append(f"conn:{tenant.pk}")
            refusal = await self.hold_user(self.principal)
        else:
            refusal = "ConnectionRateLimitReached: Too many connected users"
        if refusal is None:
            return True
        await self.release_connection()
        metrics.REFUSALS.labels(tenant.slug, "connections").inc()
        await self.limit_record(refusal)
        await self.send_message(
            reply(PHOENIX_TOPIC, None, None, "error", {"reason": refusal})
        )
        await self.close(code=CLOSE_LIMIT)
        return False

    async def hold_user(self, principal: Principal) -> str | None:
        """Count the socket against the user of its latest token, or say why not.

        A socket is one user's: the `sub` of its key's token, else of the first
        join's token, whichever way it came; a token of another user (a refresh
        after sign-in, say) moves the count. Keys and tokens without `sub` hold
        no user count.
        """
        sub = principal.sub
        if not sub or sub == self._user:
            return None
        tenant = principal.tenant
        key = f"conn:{tenant.pk}:u:{sub}"
        if not await hub().hold(key, tenant.max_connections_per_user):
            return "ConnectionRateLimitReached: Too many connections for this user"
        await self.release_user()
        self._user = sub
        self._holds.append(key)
        return None

    async def release_user(self) -> None:
        if self._user:
            key = f"conn:{self.principal.tenant.pk}:u:{self._user}"
            self._holds.remove(key)
            self._user = ""
            await hub().release(key)

    async def release_connection(self) -> None:
        """Give back every count the socket holds; a failure skips only its key."""
        holds, self._holds, self._user = getattr(self, "_holds", []), [], ""
        for key in holds:
            try:
                await hub().release(key)
            except RedisError as exc:
                # A count left behind lapses with this process's liveness key.
                logger.warning("Could not release %s: %s", key, exc)
            except Exception:
                logger.exception("Could not release %s", key)

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

    def message_rate(self, *, heartbeat: bool) -> str:
        """Count one client message in this connection's one-second window:
        "ok", "over" the tenant's limit, or a "flood" (twice the limit and
        FLOOD_ROOM more), which closes the socket: answering each frame of it
        would cost more than the frames."""
        second, count = self._window
        now = int(time.monotonic())
        count = count + 1 if now == second else 1
        self._window = (now, count)
        limit = self.principal.tenant.max_events_per_second
        if count <= limit + (HEARTBEAT_ROOM if heartbeat else 0):
            return "ok"
        return "flood" if count > 2 * limit + FLOOD_ROOM else "over"
