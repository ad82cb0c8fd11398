"""The relay: every server process tails the change log and herald_messages.

Delivery does not depend on the writer's process. Whoever wrote a change (a
REST publish, a tracked model's save, a trigger fired by psql or a Go
worker), each process reads the committed rows itself and hands them to its
own fan-out (realtime.hub), as the same `stream.changes` messages the layer
carried before. A writer that dies right after its commit still reaches every
socket: the rows are in the log.

Ordering: a tenant's change ids commit in order (the per-tenant lock of
realtime/services/changes.py, taken by capture triggers too), and so do its
herald_messages ids (realtime/capture/messages.py). The relay keeps one cursor
per tenant and reads "after cursor" per tenant: it never skips a commit and
never reads a row twice, so a socket gets each change at most once, in the
tenant's commit order. A single global cursor would skip: tenant A's id 9 may
commit after tenant B's id 10. SQLite serializes writers, so there ids
commit in order and one cursor suffices.

Waking: Herald's own writes send a hint over the channel layer once they
commit (realtime/wake.py); anything else is found by a poll every
HERALD_RELAY_POLL_INTERVAL seconds.
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
    more: bool = False  # a tenant had more rows than one pass reads


class LogReader:
    """Committed rows after per-tenant cursors (sync: runs in a DB thread)."""

    def __init__(self) -> None:
        self.change_cursors: dict[int, int] = {}
        self.message_cursors: dict[str, int] = {}
        self.tenants: dict[str, int] = {}  # slug -> id
        # SQLite: one cursor each (writers are serialized, ids commit in order).
        self.change_cursor = 0
        self.message_cursor = 0
        self.started = False

    def start(self) -> None:
        """Begin at the current end of the log: only later commits are live."""
        self._refresh_tenants(initial=True)
        if connection.vendor != "postgresql":
            self.change_cursor = (
                LiveUpdate.objects.order_by("-pk").values_list("pk", flat=True).first()
                or 0
            )
            self.message_cursor = (
                HeraldMessage.objects.order_by("-pk")
                .values_list("pk", flat=True)
                .first()
                or 0
            )
        self.started = True

    def _refresh_tenants(self, *, initial: bool = False) -> None:
        rows = Tenant.objects.values_list("id", "slug")
        self.tenants = {slug: pk for pk, slug in rows}
        known = set(self.change_cursors)
        fresh = [pk for pk in self.tenants.values() if pk not in known]
        # A tenant created after the relay started has nothing older to skip.
        heads = self._heads(fresh) if initial else {}
        for pk in fresh:
            self.change_cursors[pk] = heads.get(pk, (0, 0))[0]
        for slug, pk in self.tenants.items():
            if slug not in self.message_cursors:
                self.message_cursors[slug] = heads.get(pk, (0, 0))[1]
        for pk in known - set(self.tenants.values()):
            del self.change_cursors[pk]
        for slug in set(self.message_cursors) - set(self.tenants):
            del self.message_cursors[slug]

    def _heads(self, tenant_ids: list[int]) -> dict[int, tuple[int, int]]:
        changes, messages = LiveUpdate._meta.db_table, HeraldMessage._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT t.id, (SELECT max(u.id) FROM {changes} u "  # noqa: S608
                "WHERE u.tenant_id = t.id), (SELECT max(m.id) FROM "
                f"{messages} m WHERE m.tenant_slug = t.slug) "
                "FROM realtime_tenant t",
            )
            return {
                pk: (change or 0, message or 0)
                for pk, change, message in cursor.fetchall()
                if pk in tenant_ids
            }

    def read(self) -> Batch:
        if not self.started:
            self.start()
        self._refresh_tenants()
        limit = settings.HERALD_RELAY_BATCH
        batch = Batch()
        batch.changes = self._read_changes(limit)
        for change in batch.changes:
            self.change_cursors[change.tenant_id] = change.pk
        by_slug = self._read_messages(limit)
        for message in by_slug:
            self.message_cursors[message.tenant_slug] = message.pk
            batch.messages.append((self.tenants[message.tenant_slug], message))
        batch.more = len(batch.changes) >= limit or len(by_slug) >= limit
        return batch

    def _read_changes(self, limit: int) -> list[LiveUpdate]:
        if not self.change_cursors:
            return []
        if connection.vendor != "postgresql":
            # One writer at a time: ids commit in order across tenants.
            after = min(self.change_cursors.values())
            rows = LiveUpdate.objects.filter(pk__gt=after).order_by("pk")[:limit]
            return [
                r for r in rows if r.pk > self.change_cursors.get(r.tenant_id, r.pk)
            ]
        tenants, cursors = zip(*self.change_cursors.items(), strict=True)
        return list(
            LiveUpdate.objects.raw(
                "SELECT u.* FROM unnest(%s::bigint[], %s::bigint[]) AS c(tid, after) "  # noqa: S608
                f"CROSS JOIN LATERAL (SELECT * FROM {LiveUpdate._meta.db_table} x "
                "WHERE x.tenant_id = c.tid AND x.id > c.after ORDER BY x.id "
                "LIMIT %s) u ORDER BY u.id",
                [list(tenants), list(cursors), limit],
            )
        )

    def _read_messages(self, limit: int) -> list[HeraldMessage]:
        if not self.message_cursors:
            return []
        if connection.vendor != "postgresql":
            rows = list(
                HeraldMessage.objects.filter(pk__gt=self.message_cursor).order_by("pk")[
                    :limit
                ]
            )
            self.message_cursor = rows[-1].pk if rows else self.message_cursor
            # A message naming no tenant is dropped, as on PostgreSQL.
            return [m for m in rows if m.tenant_slug in self.tenants]
        slugs, cursors = zip(*self.message_cursors.items(), strict=True)
        return list(
            HeraldMessage.objects.raw(
                "SELECT m.* FROM unnest(%s::text[], %s::bigint[]) AS c(slug, after) "
                "CROSS JOIN LATERAL (SELECT * FROM herald_messages x "
                "WHERE x.tenant_slug = c.slug AND x.id > c.after ORDER BY x.id "
                "LIMIT %s) m ORDER BY m.id",
                [list(slugs), list(cursors), limit],
            )
        )


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
