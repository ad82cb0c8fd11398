"""The relay: every server process tails the change log and herald_messages.

Delivery does not depend on the writer's process. Whoever wrote a change (a
REST publish, a tracked model's save, a trigger fired by psql or a Go
worker), each process reads the committed rows itself and hands them to its
own fan-out (realtime.hub), as the same `stream.changes` messages the layer
carried before. A writer that dies right after its commit still reaches every
socket: the rows are in the log.

Ordering: every reader reads the change log and herald_messages in log order
(realtime/change_log.py): on PostgreSQL, only rows of transactions older than
every running one (pg_snapshot_xmin), in (transaction id, row id) order; on
SQLite, whose writers are serialized, in id order. The relay keeps one
position per log and reads "after position" in one scan, whatever the number
of tenants: no row can appear before a position already read, so it never
skips a commit, never reads a row twice (a socket gets each change at most
once) and gives each tenant's changes in the order catch-up returns them.
No writer waits for another. The cost: a transaction that has written
something and stays open anywhere on the server delays the delivery of every
change committed after it began, until it ends.

Waking: Herald's own writes send a hint over the channel layer once they
commit (realtime/wake.py); anything else is found by a poll every
HERALD_RELAY_POLL_INTERVAL seconds, or at once with HERALD_RELAY_NOTIFY
(PostgreSQL LISTEN/NOTIFY; off by default, see realtime/wake.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from django.conf import settings
from django.db import connection

from realtime.change_log import HORIZON, LOG, Position, ordered_by_commit, position_of
from realtime.db import OUTAGE
from realtime.layer import (
    BROADCAST_TYPE,
    RELAY_GROUP,
    changes_messages,
    layer,
    relay_channel,
    stream_group,
    tenant_group,
    topic_group,
)
from realtime.models import HeraldMessage, LiveUpdate, Tenant
from realtime.wake import NOTIFY_CHANNEL

if TYPE_CHECKING:
    from realtime.hub import Hub

logger = logging.getLogger(__name__)

# Seconds between re-joins of the relay group (channels-redis expires group
# memberships, and a restarted Redis forgets them).
MEMBERSHIP_REFRESH = 30.0
# Seconds the first socket's connect waits for the relay's cursors, at most.
PRIME_TIMEOUT = 5.0


@dataclass(slots=True)
class Batch:
    changes: list[LiveUpdate] = field(default_factory=list)
    messages: list[tuple[int, HeraldMessage]] = field(default_factory=list)
    more: bool = False  # the log had more rows than one pass reads


# One scan of each log after the relay's position, below the horizon, in log
# order (PostgreSQL): the cost of a pass does not grow with the tenants.
CHANGES_SQL = (
    f"SELECT u.*, u.xid::text::bigint AS log_xid FROM {LOG} u "  # noqa: S608
    f"WHERE (u.xid, u.id) > (%s::text::xid8, %s) AND u.xid < {HORIZON} "
    "ORDER BY u.xid, u.id LIMIT %s"
)
MESSAGES_SQL = (
    "SELECT m.*, m.xid::text::bigint AS log_xid FROM herald_messages m "  # noqa: S608
    f"WHERE (m.xid, m.id) > (%s::text::xid8, %s) AND m.xid < {HORIZON} "
    "ORDER BY m.xid, m.id LIMIT %s"
)


class LogReader:
    """Committed rows after the relay's positions (sync: runs in a DB thread).

    One position per log, for every tenant: every reader reads the logs in
    the same order (realtime/change_log.py), so whatever precedes a position
    has been read, and a tenant's changes come in the order catch-up gives.
    """

    def __init__(self) -> None:
        self.change_position: Position = (0, 0)
        self.message_position: Position = (0, 0)
        self.started = False

    def start(self) -> None:
        """Begin at the current end of the log: only later commits are live."""
        if ordered_by_commit():
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT {HORIZON}::text::bigint")
                horizon = cursor.fetchone()[0]
            # Before every row of a transaction still running, after every other.
            self.change_position = self.message_position = (horizon, 0)
        else:
            self.change_position = (0, _last_id(LiveUpdate))
            self.message_position = (0, _last_id(HeraldMessage))
        self.started = True

    def read(self) -> Batch:
        if not self.started:
            self.start()
        limit = settings.HERALD_RELAY_BATCH
        batch = Batch()
        batch.changes = self._read_changes(limit)
        if batch.changes:
            self.change_position = position_of(batch.changes[-1])
        messages = self._read_messages(limit)
        if messages:
            self.message_position = position_of(messages[-1])
        tenants = (
            dict(
                Tenant.objects.filter(
                    slug__in={m.tenant_slug for m in messages}
                ).values_list("slug", "id")
            )
            if messages
            else {}
        )
        # A message naming no tenant is dropped.
        batch.messages = [
            (tenants[m.tenant_slug], m) for m in messages if m.tenant_slug in tenants
        ]
        batch.more = len(batch.changes) >= limit or len(messages) >= limit
        return batch

    def _read_changes(self, limit: int) -> list[LiveUpdate]:
        xid, after = self.change_position
        if not ordered_by_commit():
            # One writer at a time: ids commit in order across tenants.
            return list(LiveUpdate.objects.filter(pk__gt=after).order_by("pk")[:limit])
        return list(LiveUpdate.objects.raw(CHANGES_SQL, [str(xid), after, limit]))

    def _read_messages(self, limit: int) -> list[HeraldMessage]:
        xid, after = self.message_position
        if not ordered_by_commit():
            return list(
                HeraldMessage.objects.filter(pk__gt=after).order_by("pk")[:limit]
            )
        return list(HeraldMessage.objects.raw(MESSAGES_SQL, [str(xid), after, limit]))


def _last_id(model: type[LiveUpdate] | type[HeraldMessage]) -> int:
    return model.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def _conninfo() -> str:
    """The default database's connection string, for a session of the relay's own."""
    from psycopg.conninfo import make_conninfo

    db = settings.DATABASES["default"]
    params = {
        "dbname": db.get("NAME"),
        "user": db.get("USER"),
        "password": db.get("PASSWORD"),
        "host": db.get("HOST"),
        "port": str(db["PORT"]) if db.get("PORT") else None,
    }
    options = {k: v for k, v in db.get("OPTIONS", {}).items() if isinstance(v, str)}
    return make_conninfo(**{k: v for k, v in params.items() if v}, **options)


def broadcast_message(tenant_id: int, message: HeraldMessage) -> dict[str, Any]:
    """The layer message a REST broadcast of this row would have sent."""
    body: dict[str, Any] = {
        "type": "broadcast",
        "event": message.event,
        "payload": message.payload,
    }
    if message.private:  # stored for replay: its id travels (realtime/replay.py)
        body["meta"] = {"id": str(message.pk)}
    return {
        "type": BROADCAST_TYPE,
        "stream": topic_group(tenant_id, message.topic, private=message.private),
        "topic": f"realtime:{message.topic}",
        "payload": orjson.dumps(body),
        "sender": "",
        "raw": None,
    }


class Relay:
    """Reads the log for one hub and hands what it finds to its fan-out."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.reader = LogReader()
        self.woken = asyncio.Event()
        self.channel = relay_channel()
        self._tasks: list[asyncio.Task[None]] = []
        # A thread of its own, not the consumers' shared sync thread: a poll
        # never queues behind their database work, nor theirs behind it.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="herald-relay")

    def prime(self) -> None:
        """Set the cursors at the end of the log before the first socket joins.

        Called once per process, from the event loop, when its hub is made
        (a socket is connecting): it waits for one read of the log heads on
        the relay's thread. Left to the relay's loop, a join could complete
        first and the changes committed in between would never reach it.
        A database that is down leaves it to the loop (nothing commits then).
        """
        try:
            self._executor.submit(self._start).result(timeout=PRIME_TIMEOUT)
        except Exception as exc:
            logger.warning("Relay starts without its cursors: %s", exc)

    def _start(self) -> None:
        try:
            self.reader.start()
        finally:
            connection.close_if_unusable_or_obsolete()

    def _read(self) -> Batch:
        try:
            return self.reader.read()
        finally:
            # As every request does: kept only with HERALD_DB_CONN_MAX_AGE, so
            # by default the relay holds no session between polls (a "smart"
            # PostgreSQL shutdown waits for sessions to end) and an outage
            # leaves no broken connection behind.
            connection.close_if_unusable_or_obsolete()

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._listen()),
            asyncio.create_task(self._run()),
        ]
        if settings.HERALD_RELAY_NOTIFY and connection.vendor == "postgresql":
            self._tasks.append(asyncio.create_task(self._notified()))

    async def _notified(self) -> None:
        """LISTEN for the change log's NOTIFY (HERALD_RELAY_NOTIFY, realtime/wake.py).

        A session of its own, kept open; the poll covers any gap while it is
        down, and a wake-up after reconnecting catches up at once.
        """
        import psycopg

        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    _conninfo(), autocommit=True
                ) as session:
                    await session.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self.woken.set()
                    async for _ in session.notifies():
                        self.woken.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("Relay could not LISTEN for commits: %r", exc)
                await asyncio.sleep(1)

    async def _listen(self) -> None:
        """Turn hints on the layer into a wake-up; re-join the group now and then."""
        joined_at = -MEMBERSHIP_REFRESH
        loop = asyncio.get_running_loop()
        while True:
            try:
                if loop.time() - joined_at >= MEMBERSHIP_REFRESH:
                    await layer().group_add(RELAY_GROUP, self.channel)
                    joined_at = loop.time()
                await asyncio.wait_for(
                    layer().receive(self.channel), MEMBERSHIP_REFRESH
                )
                self.woken.set()
            except TimeoutError:
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The layer is down (Redis restarting): the poll still finds
                # every change. A warning, not a traceback: this is expected.
                logger.warning("Relay could not listen for hints: %r", exc)
                await asyncio.sleep(1)

    async def _run(self) -> None:
        interval = settings.HERALD_RELAY_POLL_INTERVAL
        loop = asyncio.get_running_loop()
        down = False
        while True:
            self.woken.clear()
            try:
                batch = await loop.run_in_executor(self._executor, self._read)
            except asyncio.CancelledError:
                raise
            except OUTAGE as exc:
                # The database is down: what commits meanwhile waits in the log.
                if not down:
                    logger.warning("Relay cannot read the change log: %s", exc)
                down = True
                await asyncio.sleep(1)
                continue
            except Exception:  # a process boundary: the relay must keep going
                logger.exception("Relay could not read the change log; retrying")
                await asyncio.sleep(1)
                continue
            down = False
            await self._deliver(batch)
            if batch.more:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.woken.wait(), interval)

    async def _deliver(self, batch: Batch) -> None:
        # Frames only for the streams this process has sockets on: every
        # process reads every change, most of them due elsewhere.
        local = self.hub.groups
        due = [
            c
            for c in batch.changes
            if stream_group(c.tenant_id, c.table) in local
            or tenant_group(c.tenant_id) in local
        ]
        messages = changes_messages(due) if due else []
        messages += [
            broadcast_message(t, m)
            for t, m in batch.messages
            if not m.sent_live  # a REST or socket broadcast Herald sent itself
        ]
        if messages:
            await self.hub.dispatch_all(messages)
