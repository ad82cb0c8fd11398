"""Per-process fan-out of changes to this process's sockets.

The process holds one channel-layer channel. It joins a stream group once,
when the first local channel binds to that stream, and leaves it with the
last: fan-out across processes costs one layer message per process. Inside,
channels are grouped into audiences (same topic, codec, bindings, role and
claims); per change, bindings and row policy are evaluated once per audience
(memoised across audiences) and each distinct frame is encoded once. The
process takes every message waiting on its channel at once, and the frames
they bring a socket are written to it together: one write per socket, however
many changes and publishes, so a process that falls behind catches up in
larger writes instead of more of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import socket
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import orjson
from channels.db import database_sync_to_async
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from realtime import metrics
from realtime.auth import KeyCache, Principal, shared_tenant_forget
from realtime.bindings import Binding, binding_matches, project_change
from realtime.db import in_db
from realtime.errors import DatabaseUnavailable
from realtime.fanout_index import AudienceIndex
from realtime.fastsend import Frame, Outbox, abort, buffered, overfull
from realtime.layer import (
    BROADCAST_TYPE,
    CHANGES_TYPE,
    CONTROL_GROUP,
    CONTROL_TYPE,
    PRESENCE_TYPE,
    group_add_many,
    layer,
    node_channel,
    presence_send,
    receive_many,
    stream_group,
    tenant_group,
)
from realtime.limits import counters
from realtime.pipelined import Coalesced
from realtime.presence import (
    SWEEP_PERIOD,
    Entry,
    diff_payload,
    presence_store,
    redis_client,
)
from realtime.protocol import BROADCAST, POSTGRES_CHANGES, PRESENCE_DIFF, Codec
from realtime.protocol.binary import encode_user_broadcast
from realtime.relay import Relay
from realtime.row_policy import (
    claims_key,
    old_row_visible,
    redacted_old_record,
    relevant_claims,
    row_visible,
)
from realtime.selectors import Rules, row_policy_rules
from subscriptions.services import subscriptions_flush

logger = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]


class Socket(Protocol):
    """What the hub needs of a connected consumer to close it on orders."""

    connection_id: str

    def subscription_ids(self) -> list[int]: ...

    def matches(self, order: dict[str, Any]) -> bool: ...

    async def obey(self, order: dict[str, Any]) -> None: ...

    async def shut_down(self, code: int) -> None: ...


# Claims that differ between two tokens of the same user and never decide a
# row policy; leaving them out lets such sockets share an audience.
VOLATILE_CLAIMS = frozenset({"exp", "iat", "nbf", "jti"})
POLICY_TTL = 5.0
# channels-redis expires group memberships after a day, and a restarted Redis
# forgets them at once: memberships are re-added on this period.
MEMBERSHIP_REFRESH = 30.0
# Memberships re-added in one Redis round trip at most.
REJOIN_BATCH = 500
# Heartbeats and delivery counts reach the subscription rows in batches.
LEDGER_FLUSH = 15.0
# Changes a socket is written at once, at most (about 300 KB of typical
# frames), however many waiting messages the process took together.
MAX_CHANGES_PER_WRITE = 500
# Sockets opened or closed before freed heap is given back to the OS.
TRIM_AFTER_CHURN = 200
# After losing Redis, the hub listens again after this pause, doubled up to
# 1 s while Redis stays away: a restarted Redis has forgotten the memberships,
# and what is published to it before the hub puts them back reaches no socket
# live (only catch-up), so the hub comes back quickly.
RECONNECT_PAUSE = 0.1


@dataclass(eq=False, slots=True)
class Member:
    """One joined channel of one socket, as the hub sees it."""

    send: Send
    codec: Codec
    topic: str
    bindings: tuple[Binding, ...]
    principal: Principal
    subscription_id: int = 0
    delivered: int = 0
    flushed: int = 0
    # daphne's protocol behind `send` and its TCP transport (fastsend).
    protocol: Any = None
    transport: Any = None
    # A change feed (realtime/replay.py): changes go out as broadcasts.
    feed: bool = False

    @property
    def tenant_id(self) -> int:
        return self.principal.tenant.pk

    def groups(self) -> set[str]:
        """The streams to join. A binding on every table takes the tenant's,
        which carries every change: the channel's table bindings are matched
        there too, not joined as well (each change would come twice)."""
        tables = {b.table for b in self.bindings}
        if None in tables:
            return {tenant_group(self.tenant_id)}
        return {stream_group(self.tenant_id, t) for t in tables if t is not None}

    def audience_key(self) -> tuple[Any, ...]:
        claims = {
            k: v for k, v in self.principal.claims.items() if k not in VOLATILE_CLAIMS
        }
        return (
            self.codec.vsn,
            self.topic,
            self.bindings,
            self.feed,
            self.principal.role,
            # decoded: orjson's bytes keep a 4 KB buffer each (per audience).
            orjson.dumps(claims, option=orjson.OPT_SORT_KEYS).decode(),
        )


@dataclass(eq=False, slots=True)
class TopicMember:
    """A joined channel, for the broadcasts and presence of its topic."""

    send: Send
    codec: Codec
    topic: str
    connection: str
    tenant: str = ""  # the tenant's slug, for metrics
    broadcast_self: bool = False
    read_broadcast: bool = True
    read_presence: bool = True
    presence_enabled: bool = False
    subscription_id: int = 0
    delivered: int = 0
    flushed: int = 0
    # daphne's TCP transport behind `send`, to drop a socket that stopped reading.
    transport: Any = None

    def wants_presence(self) -> bool:
        return self.presence_enabled and self.read_presence


@dataclass(eq=False, slots=True)
class Audience:
    """Channels that would receive byte-identical frames for any change."""

    codec: Codec
    topic: str
    bindings: tuple[Binding, ...]
    principal: Principal
    members: dict[int, Member] = field(default_factory=dict)
    feed: bool = False
    # claims_key of the principal per set of claim names the policies read:
    # a list claim's canonical set is built once, not once per change.
    claims_keys: dict[frozenset[str], tuple[Any, ...]] = field(default_factory=dict)


@dataclass(slots=True)
class ChangeContext:
    """What one change's fan-out computes once and shares across audiences."""

    table: str
    change: str
    record: Any
    old_record: Any
    row: Any
    policies: dict[str, Rules]
    data: dict[str, Any]
    data_json: bytes
    commit_timestamp: str
    matches: dict[Binding, bool] = field(default_factory=dict)
    # (role, relevant claim values) → (may see the change, may see its old row)
    visible: dict[Any, tuple[bool, bool]] = field(default_factory=dict)
    frames: dict[
        tuple[str, str, tuple[int, ...], bool, frozenset[str] | None, bool], Frame
    ] = field(default_factory=dict)
    # role → the claim names its policies read
    claim_names: dict[str, frozenset[str]] = field(default_factory=dict)
    # `data_json` with the old row cut to its id, and shaped to a `select`;
    # built for the first who needs each.
    shaped_json: dict[tuple[bool, frozenset[str] | None], bytes] = field(
        default_factory=dict
    )

    def matching_ids(
        self, bindings: Iterable[Binding]
    ) -> list[tuple[frozenset[str] | None, tuple[int, ...]]]:
        """The ids of the bindings the change matches, grouped by their
        `select`: each group is sent its own frame, shaped to its columns."""
        groups: dict[frozenset[str] | None, list[int]] = {}
        for binding in bindings:
            hit = self.matches.get(binding)
            if hit is None:
                hit = self.matches[binding] = binding_matches(
                    binding,
                    table=self.table,
                    change_type=self.change,
                    record=self.record,
                    old_record=self.old_record,
                )
            if hit:
                groups.setdefault(binding.select, []).append(binding.id)
        return [(select, tuple(ids)) for select, ids in groups.items()]

    def sight(self, audience: Audience) -> tuple[bool, bool]:
        """Whether the audience may see the change, and its old row whole."""
        role, claims = audience.principal.role, audience.principal.claims
        rules = self.policies.get(role, [])
        relevant = self.claim_names.get(role)
        if relevant is None:  # once per role and change, not per audience
            relevant = self.claim_names[role] = relevant_claims(rules)
        # List claims too: claims_key holds their canonical values as a set.
        values = audience.claims_keys.get(relevant)
        if values is None:
            values = audience.claims_keys[relevant] = claims_key(relevant, claims)
        key = (role, values)
        seen = self.visible.get(key)
        if seen is None:
            seen = self.visible[key] = self._judge(role, rules, claims)
        return seen

    def _judge(
        self, role: str, rules: Rules, claims: Mapping[str, Any]
    ) -> tuple[bool, bool]:
        if not row_visible(role=role, policies=rules, row=self.row, claims=claims):
            return False, False
        return True, old_row_visible(
            role=role,
            policies=rules,
            change_type=self.change,
            old_record=self.old_record,
            claims=claims,
        )

    def frame(
        self,
        codec: Codec,
        topic: str,
        ids: tuple[int, ...],
        *,
        redacted: bool,
        select: frozenset[str] | None = None,
        feed: bool = False,
    ) -> Frame:
        key = (codec.vsn, topic, ids, redacted, select, feed)
        found = self.frames.get(key)
        if found is None:
            data_json = self._shaped_json(redacted, select)
            if feed:  # a change feed's broadcast, its cursor as meta.id
                payload = feed_payload(self.change, data_json, self.data["seq"])
                event = BROADCAST
            else:
                payload = (
                    b'{"ids":' + orjson.dumps(ids) + b',"data":' + data_json + b"}"
                )
                event = POSTGRES_CHANGES
            found = self.frames[key] = Frame(
                codec.encode_raw(topic=topic, event=event, payload_json=payload)
            )
        return found

    def _shaped_json(self, redacted: bool, select: frozenset[str] | None) -> bytes:
        """The change's data as one class of subscriber sees it: the policy
        has seen the whole row; what is cut here is only what is sent."""
        if not redacted and select is None:
            return self.data_json
        found = self.shaped_json.get((redacted, select))
        if found is None:
            data = self.data
            if redacted:
                data = {**data, "old_record": redacted_old_record(self.old_record)}
            found = self.shaped_json[redacted, select] = orjson.dumps(
                project_change(data, select)
            )
        return found


class PolicyCache:
    """Row policies per (tenant, table), re-read after a few seconds."""

    def __init__(self) -> None:
        self._entries: dict[tuple[int, str], tuple[float, dict[str, Rules]]] = {}

    async def get(self, tenant_id: int, table: str) -> dict[str, Rules]:
        key = (tenant_id, table)
        entry = self._entries.get(key)
        if entry is None or time.monotonic() - entry[0] > POLICY_TTL:
            try:
                rules = await in_db(row_policy_rules, tenant_id=tenant_id, table=table)
            except DatabaseUnavailable:
                if entry is None:
                    raise
                return entry[1]  # the database is down: the last policies known
            entry = self._entries[key] = (time.monotonic(), rules)
        return entry[1]

    def forget_tenant(self, tenant_id: int) -> None:
        for key in [k for k in self._entries if k[0] == tenant_id]:
            del self._entries[key]


class Hub:
    """The fan-out of one server process (one per event loop)."""

    def __init__(self) -> None:
        self.node = f"{socket.gethostname()}:{os.getpid()}"
        self.channel: str | None = None
        # Once it listens for orders (realtime.layer.CONTROL_GROUP).
        self.listening = False
        self.groups: dict[str, dict[tuple[Any, ...], Audience]] = {}
        # stream group → its audiences by the values their filters require
        self.indexes: dict[str, AudienceIndex] = {}
        # topic group → the local channels on that topic
        self.rooms: dict[str, dict[int, TopicMember]] = {}
        self.policies = PolicyCache()
        redis = redis_client()
        self.presence = presence_store(redis)
        self.counters = counters(redis)
        # tenant id → frames delivered since the last tally flush
        self.tally: dict[int, int] = {}
        # What this process put in the shared store, to put back after a restart.
        self.local_presence: dict[tuple[str, str], Entry] = {}
        self.local_holds: dict[str, int] = {}
        self._server_id: str | None = None
        # Sockets opened or closed since the heap was last trimmed.
        self._churn = 0
        # connection id → the consumer holding it, for orders from elsewhere.
        self.sockets: dict[str, Socket] = {}
        self._start_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        # First joins of streams and topics, sent to the layer together: a
        # storm's joins of a thousand topics are one Redis round trip.
        self.group_adds: Coalesced[str, None] = Coalesced(self._add_groups)
        # Keys and tenants this process's sockets resolved (realtime.auth).
        self.keys = KeyCache()

    async def _ensure_started(self) -> str:
        async with self._start_lock:
            if self.channel is None:
                self.channel = node_channel()
                await layer().group_add(CONTROL_GROUP, self.channel)
                await self.presence.alive(self.node)
                await self._check_restart()
                self._tasks = [
                    asyncio.create_task(self._receive_loop()),
                    asyncio.create_task(self._refresh_loop()),
                    asyncio.create_task(self._presence_loop()),
                    asyncio.create_task(self._ledger_loop()),
                ]
                self.listening = True
        return self.channel

    async def add(self, member: Member) -> None:
        """Start delivering to a member; returns once its streams are joined."""
        await self._ensure_started()
        # A fresh join sees fresh policies.
        self.policies.forget_tenant(member.tenant_id)
        key = member.audience_key()
        for group in member.groups():
            if group not in self.groups:
                # Joined first, kept after: a membership the layer refused
                # (Redis down) is never kept, so the caller's cleanup and the
                # periodic refresh only ever see groups that were made.
                await self.group_adds(group)
            # Looked up after the await: another first join of the same stream
            # may have made it meanwhile, with its members in it.
            audiences = self.groups.get(group)
            if audiences is None:
                audiences = self.groups[group] = {}
                self.indexes[group] = AudienceIndex()
            audience = audiences.get(key)
            if audience is None:
                audience = audiences[key] = Audience(
                    member.codec,
                    member.topic,
                    member.bindings,
                    member.principal,
                    feed=member.feed,
                )
                self.indexes[group].add(audience)
            audience.members[id(member)] = member

    async def remove(self, member: Member) -> None:
        key = member.audience_key()
        for group in member.groups():
            audiences = self.groups.get(group, {})
            audience = audiences.get(key)
            if audience is None:
                continue
            audience.members.pop(id(member), None)
            if not audience.members:
                del audiences[key]
                self.indexes[group].remove(audience)
            if not audiences and group in self.groups:
                del self.groups[group]
                del self.indexes[group]
                await self._discard(group)

    # --- Shared state this process owns, mirrored so it can be put back ------

    async def presence_put(self, room: str, field_name: str, entry: Entry) -> None:
        self.local_presence[room, field_name] = entry
        await self.presence.put(room, field_name, entry)

    async def presence_remove(self, room: str, field_name: str) -> Entry | None:
        self.local_presence.pop((room, field_name), None)
        return await self.presence.remove(room, field_name)

    async def hold(self, key: str, limit: int) -> bool:
        held = await self.counters.hold(key, self.node, limit)
        if held:
            self.local_holds[key] = self.local_holds.get(key, 0) + 1
        return held

    async def release(self, key: str) -> None:
        self.local_holds[key] = max(0, self.local_holds.get(key, 0) - 1)
        await self.counters.release(key, self.node)

    async def restore(self) -> None:
        """Put back what a restarted Redis forgot: memberships, presences, holds.

        Raises if a membership could not be put back, so that the restart is
        still seen as new at the next check, and the restore tried again.
        """
        if await self._rejoin_groups():
            raise RedisConnectionError("some groups could not be rejoined")
        await self.presence.alive(self.node)
        for (room, field_name), entry in list(self.local_presence.items()):
            await self.presence.put(room, field_name, entry)
        await self.counters.restore(self.node, self.local_holds)
        logger.warning("Hub %s restored its state after a Redis restart", self.node)

    async def key_cache(self) -> KeyCache | None:
        """The cache of keys, once this process listens for the orders that
        empty it (a revoked key, a suspended tenant); None if it cannot."""
        try:
            await self._ensure_started()
        except RedisError as exc:
            logger.warning("Hub %s could not start: %s", self.node, exc)
            return None
        return self.keys if self.listening else None

    async def register(self, socket: Socket) -> None:
        await self._ensure_started()
        self.sockets[socket.connection_id] = socket
        self._churn += 1

    def unregister(self, socket: Socket) -> None:
        if self.sockets.pop(socket.connection_id, None) is not None:
            self._churn += 1

    async def join_room(self, group: str, member: TopicMember) -> None:
        """Deliver the topic's broadcasts and presence diffs to a channel."""
        await self._ensure_started()
        if group not in self.rooms:
            await self.group_adds(group)  # as in `add`: then kept
        # After the await: a concurrent first join may have made the room.
        self.rooms.setdefault(group, {})[id(member)] = member

    async def leave_room(self, group: str, member: TopicMember) -> None:
        room = self.rooms.get(group)
        if room is None:
            return
        room.pop(id(member), None)
        if not room:
            del self.rooms[group]
            await self._discard(group)

    async def _discard(self, group: str) -> None:
        """Leave a group. A failure (Redis busy or down) is logged, not raised:
        the local state is already gone, and a stray membership only brings
        messages this process ignores until it expires."""
        if self.channel is None:
            return
        try:
            await layer().group_discard(group, self.channel)
        except RedisError as exc:
            logger.warning("Hub %s could not leave %s: %s", self.node, group, exc)

    async def replace_principal(self, member: Member, principal: Principal) -> None:
        """A refreshed token: the member moves to the audience of its new claims."""
        await self.remove(member)
        member.principal = principal
        await self.add(member)

    async def _receive_loop(self) -> None:
        assert self.channel is not None
        pause = RECONNECT_PAUSE
        while True:
            try:
                messages = await receive_many(layer(), self.channel)
            except asyncio.CancelledError:
                raise
            except RedisTimeoutError:
                continue  # an idle wait ran out: simply listen again
            except RedisConnectionError as exc:
                # Redis went away (restarting): expected, so no traceback.
                logger.warning("Hub %s lost Redis (%s); retrying", self.node, exc)
                await asyncio.sleep(pause)
                pause = min(2 * pause, 1.0)
                await self._check_restart()
                continue
            except Exception:
                # The layer is down (Redis restarting): wait, then listen again.
                logger.exception("Hub %s could not receive; retrying", self.node)
                await asyncio.sleep(1)
                await self._check_restart()
                continue
            pause = RECONNECT_PAUSE
            try:
                await self.dispatch_all(messages)
            except Exception:  # each message's failure is handled inside
                logger.exception("Hub %s could not write a batch", self.node)

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(MEMBERSHIP_REFRESH)
            await self._rejoin_groups()

    async def _add_groups(self, groups: list[str]) -> list[None]:
        assert self.channel is not None
        await group_add_many(layer(), groups, self.channel)
        return [None] * len(groups)

    async def _rejoin_groups(self) -> int:
        """Re-add every membership, a batch per round trip; a batch that fails
        does not stop the others. Returns how many memberships failed."""
        assert self.channel is not None
        failed = 0
        groups = [CONTROL_GROUP, *self.groups, *self.rooms]
        for start in range(0, len(groups), REJOIN_BATCH):
            batch = groups[start : start + REJOIN_BATCH]
            try:
                await group_add_many(layer(), batch, self.channel)
            except Exception:
                failed += len(batch)
        if failed:
            logger.warning("Hub %s could not rejoin %s groups", self.node, failed)
        return failed

    def _deliveries(self) -> dict[int, int]:
        """Deliveries per subscription since the last flush (marked as flushed)."""
        members: list[Member | TopicMember] = [
            m
            for a in self.groups.values()
            for x in a.values()
            for m in x.members.values()
        ]
        members += [m for room in self.rooms.values() for m in room.values()]
        counts: dict[int, int] = {}
        for member in {id(m): m for m in members}.values():
            if member.subscription_id and member.delivered > member.flushed:
                counts[member.subscription_id] = (
                    counts.get(member.subscription_id, 0)
                    + member.delivered
                    - member.flushed
                )
                member.flushed = member.delivered
        return counts

    async def _ledger_loop(self) -> None:
        while True:
            await asyncio.sleep(LEDGER_FLUSH)
            if self._churn >= TRIM_AFTER_CHURN:
                # A connect or disconnect storm leaves freed heap behind; give it
                # back. Not in steady streaming: trimming locks the allocator
                # for a while, which shows in the delivery p99.
                self._churn = 0
                await asyncio.get_running_loop().run_in_executor(None, release_memory)
            # Every channel this process holds is alive: marked seen in one
            # statement, so no heartbeat is ever a database write.
            seen = [i for s in self.sockets.values() for i in s.subscription_ids()]
            try:
                await database_sync_to_async(subscriptions_flush)(
                    seen=seen, delivered=self._deliveries()
                )
            except Exception:
                logger.exception("Hub %s could not flush its subscriptions", self.node)

    async def _presence_loop(self) -> None:
        """Keep this process alive in the presence store; sweep out the dead."""
        while True:
            await asyncio.sleep(SWEEP_PERIOD)
            try:
                await self._check_restart()
                await self.presence.alive(self.node)
                tally, self.tally = self.tally, {}
                if tally:
                    await self.counters.add_deliveries(tally)
                for group, room in list(self.rooms.items()):
                    if any(m.presence_enabled for m in room.values()):
                        await self._sweep(group, next(iter(room.values())).topic)
            except RedisConnectionError as exc:
                logger.warning("Hub %s could not sweep presence: %s", self.node, exc)
            except Exception:
                logger.exception("Hub %s could not sweep presence", self.node)

    async def _check_restart(self) -> None:
        """Restore the shared state when Redis is a new server (a new run id)."""
        try:
            server_id = await self.counters.server_id()
            if self._server_id is not None and server_id != self._server_id:
                await self.restore()
            self._server_id = server_id
        except RedisConnectionError as exc:
            logger.warning("Hub %s could not check Redis: %s", self.node, exc)
        except Exception:
            logger.exception("Hub %s could not check Redis", self.node)

    async def _sweep(self, group: str, topic: str) -> None:
        for field_name in await self.presence.dead_fields(group):
            # Only the process whose removal succeeds announces the leave.
            entry = await self.presence.remove(group, field_name)
            if entry is not None:
                await presence_send(
                    group, topic=topic, diff=diff_payload(leaves=[entry])
                )

    async def dispatch_all(self, messages: list[dict[str, Any]]) -> None:
        """Deliver layer messages, in order. The change frames they bring a
        socket are written to it at once, after the last message or before
        anything else (a broadcast, an order) reaches the sockets."""
        outbox = Outbox()
        delivered: list[ChangeContext] = []
        for message in messages:
            try:
                if message.get("type") == CHANGES_TYPE:
                    delivered += await self.dispatch_changes(message, outbox)
                    if len(delivered) >= MAX_CHANGES_PER_WRITE:
                        await self._flush(outbox, delivered)
                    continue
                await self._flush(outbox, delivered)
                await self.dispatch(message)
            except Exception:
                metrics.DROPS.labels(message.get("type", "unknown")).inc()
                logger.exception(
                    "Hub %s failed to deliver %s",
                    self.node,
                    message.get("seqs") or message.get("type"),
                )
        await self._flush(outbox, delivered)

    async def _flush(self, outbox: Outbox, delivered: list[ChangeContext]) -> None:
        for member, frames in outbox.flush():
            try:
                for frame in frames:
                    await member.send(frame.event)
            except Exception:
                metrics.DROPS.labels(CHANGES_TYPE).inc()
                logger.exception("Hub %s could not write to a socket", self.node)
            if overfull(member.transport):
                outbox.overfull.append(member)
        for member in outbox.overfull:
            self.drop_slow(member.transport, member.principal.tenant.slug)
        for context in delivered:
            metrics.DELIVERY_LATENCY.observe(seconds_since(context.commit_timestamp))
        delivered.clear()

    def drop_slow(self, transport: Any, tenant: str) -> None:
        """Close a socket that stopped reading, and give its memory back soon."""
        held = buffered(transport)
        if not abort(transport):
            return  # dropped already (one socket, several channels)
        logger.info(
            "Hub %s dropped a socket of %s: it stopped reading (%s bytes held)",
            self.node,
            tenant,
            held,
        )
        metrics.SLOW_CLOSED.labels(tenant).inc()
        # Its buffer is freed now; the next ledger turn returns it to the OS.
        self._churn = max(self._churn, TRIM_AFTER_CHURN)

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Deliver a message other than changes (those go through dispatch_all)."""
        kind = message.get("type")
        if kind == BROADCAST_TYPE:
            await self.dispatch_broadcast(message)
        elif kind == PRESENCE_TYPE:
            await self.dispatch_presence(message)
        elif kind == CONTROL_TYPE:
            # A revoked key, or a suspended or changed tenant, is no longer
            # known here: the next socket reads it from the database.
            self.keys.forget(key_id=message.get("key"), tenant_id=message.get("tenant"))
            if message.get("tenant") is not None:
                shared_tenant_forget(message["tenant"])
            if message.get("forget_only"):
                return  # an issuer changed, say: caches only, no socket closes
            for socket in list(self.sockets.values()):
                if socket.matches(message):
                    await socket.obey(message)

    async def dispatch_broadcast(self, message: dict[str, Any]) -> None:
        room = self.rooms.get(message["stream"], {})
        raw = message.get("raw")
        frames: dict[str, str | bytes] = {}
        sent = 0
        for member in list(room.values()):
            if not member.read_broadcast or (
                member.connection == message["sender"] and not member.broadcast_self
            ):
                continue
            if raw is not None:
                # Binary payloads only reach vsn 2 clients, as kind-4 frames.
                if not member.codec.supports_binary:
                    continue
                key, event = "binary", "bytes"
            else:
                key, event = member.codec.vsn, "text"
            frame = frames.get(key)
            if frame is None:
                frame = frames[key] = self._broadcast_frame(member, message)
            await member.send({"type": "websocket.send", event: frame})
            member.delivered += 1
            sent += 1
            if overfull(member.transport):
                self.drop_slow(member.transport, member.tenant)
        if sent:
            metrics.DELIVERIES.labels(member.tenant, "broadcast").inc(sent)

    @staticmethod
    def _broadcast_frame(member: TopicMember, message: dict[str, Any]) -> str | bytes:
        raw = message.get("raw")
        if raw is not None:
            return encode_user_broadcast(
                topic=member.topic,
                event=raw["event"],
                payload=raw["payload"],
                encoding=0,
                meta=raw.get("meta") or b"",
            )
        return member.codec.encode_raw(
            topic=member.topic, event=BROADCAST, payload_json=message["payload"]
        )

    async def dispatch_presence(self, message: dict[str, Any]) -> None:
        room = self.rooms.get(message["stream"], {})
        frames: dict[str, str] = {}
        sent = 0
        for member in list(room.values()):
            if not member.wants_presence():
                continue
            sent += 1
            frame = frames.get(member.codec.vsn)
            if frame is None:
                frame = frames[member.codec.vsn] = member.codec.encode_raw(
                    topic=member.topic,
                    event=PRESENCE_DIFF,
                    payload_json=message["diff"],
                )
            await member.send({"type": "websocket.send", "text": frame})
            if overfull(member.transport):
                self.drop_slow(member.transport, member.tenant)
        if sent:
            metrics.DELIVERIES.labels(member.tenant, "presence").inc(sent)

    async def dispatch_changes(
        self, message: dict[str, Any], outbox: Outbox
    ) -> list[ChangeContext]:
        """Put the frames of a message's changes in the outbox, for every
        audience of its stream; return the changes someone is due."""
        stream = message.get("stream", "")
        audiences = self.groups.get(stream)
        if not audiences:
            return []
        tenant_id = message["tenant"]
        contexts = []
        for data_json in message["data"]:
            data = orjson.loads(data_json)
            change = data["type"]
            contexts.append(
                ChangeContext(
                    table=data["table"],
                    change=change,
                    record=data.get("record"),
                    old_record=data.get("old_record"),
                    row=data.get("old_record" if change == "DELETE" else "record"),
                    policies=await self.policies.get(tenant_id, data["table"]),
                    data=data,
                    data_json=data_json,
                    commit_timestamp=data["commit_timestamp"],
                )
            )
        delivered = 0
        # Only the audiences whose filters these rows can match are visited.
        for audience in self.indexes[stream].candidates(c.row for c in contexts):
            delivered += self._deliver(audience, contexts, outbox)
        if not delivered:
            return []
        slug = next(iter(audiences.values())).principal.tenant.slug
        metrics.DELIVERIES.labels(slug, "change").inc(delivered)
        self.tally[tenant_id] = self.tally.get(tenant_id, 0) + delivered
        return [context for context in contexts if context.frames]

    @staticmethod
    def _deliver(
        audience: Audience, contexts: list[ChangeContext], outbox: Outbox
    ) -> int:
        """The changes an audience may see, into the outbox for its sockets."""
        frames = []
        for context in contexts:
            groups = context.matching_ids(audience.bindings)
            if not groups:
                continue
            seen, whole_old_row = context.sight(audience)
            if seen:
                frames += [
                    context.frame(
                        audience.codec,
                        audience.topic,
                        ids,
                        redacted=not whole_old_row,
                        select=select,
                        feed=audience.feed,
                    )
                    for select, ids in groups
                ]
        if not frames:
            return 0
        members = audience.members.values()
        outbox.add(frames, members)
        for member in members:
            member.delivered += len(frames)
        return len(members) * len(frames)


def feed_payload(
    change: str, data_json: bytes, seq: int, *, replayed: bool = False
) -> bytes:
    """A change as a change feed's broadcast: `meta.id` is its cursor (a
    string, as the clients type it: Supabase's ids are UUIDs)."""
    meta = b'{"replayed":true,"id":"' if replayed else b'{"id":"'
    return (
        b'{"type":"broadcast","event":'
        + orjson.dumps(change)
        + b',"payload":'
        + data_json
        + b',"meta":'
        + meta
        + str(int(seq)).encode()
        + b'"}}'
    )


def release_memory() -> None:
    """glibc keeps freed heap for reuse; give it back (RSS is what is billed)."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def seconds_since(timestamp: str) -> float:
    return max(0.0, time.time() - datetime.fromisoformat(timestamp).timestamp())


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = (
    weakref.WeakKeyDictionary()
)
_relays: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Relay] = (
    weakref.WeakKeyDictionary()
)


def running_hubs() -> list[Hub]:
    return list(_hubs.values())


def hub() -> Hub:
    """This process's hub (one per event loop)."""
    loop = asyncio.get_running_loop()
    found = _hubs.get(loop)
    if found is None:
        found = _hubs[loop] = Hub()
        # Changes reach this process's sockets by its own read of the log.
        relay = _relays[loop] = Relay(found)
        relay.prime()
        relay.start()
    return found
