"""Presence state shared by every server process.

One entry per joined channel that tracks: `{"key", "meta"}` where meta carries
its `phx_ref`. Entries live in Redis when REDIS_URL is set (a hash per room),
in memory otherwise (the embedded default has one process). Each process
keeps a liveness key alive while it runs; an entry whose process stopped
refreshing it is dead, dropped on the next sweep and announced as a leave.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from django.conf import settings

# A process that stops refreshing its liveness key for this long is gone.
NODE_TTL = 15
# How often a process refreshes its key and sweeps its rooms for the dead.
SWEEP_PERIOD = 5.0
# So a killed process's presences leave within NODE_TTL + SWEEP_PERIOD.
LEAVE_BOUND = NODE_TTL + SWEEP_PERIOD

Entry = dict[str, Any]

# Supabase's per-channel client limit (CLIENT_PRESENCE_MAX_CALLS and
# CLIENT_PRESENCE_WINDOW_MS): presence calls of one joined channel in a window
# that starts at the first call; past it the channel is shut.
CLIENT_PRESENCE_MAX_CALLS = 5
CLIENT_PRESENCE_WINDOW = 30.0
CLIENT_PRESENCE_EXCEEDED = "Client presence rate limit exceeded"
# Keys in one tracked payload, counted at every level. Supabase has no such cap
# (only the payload size); every joiner of the topic is sent every payload in
# its presence_state, so a payload is kept to what a status needs.
MAX_PRESENCE_KEYS = 100


@dataclass(slots=True)
class PresenceWindow:
    """One channel's presence calls in the current window (Supabase's counter:
    a fixed window opened by the first call after the last one closed)."""

    calls: int = 0
    reset_at: float = 0.0

    def allow(self, now: float) -> bool:
        """Count one call at monotonic time `now`; False when over the limit."""
        if self.calls == 0 or now > self.reset_at:
            self.calls, self.reset_at = 1, now + CLIENT_PRESENCE_WINDOW
            return True
        if self.calls >= CLIENT_PRESENCE_MAX_CALLS:
            return False
        self.calls += 1
        return True


def too_many_keys(value: Any, limit: int = MAX_PRESENCE_KEYS) -> bool:
    """Whether the objects in `value` hold more than `limit` keys in all.

    Iterative, and it stops once past the limit: the cost is bounded by the
    limit and the value's size, never by its depth.
    """
    stack, keys = [value], 0
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            keys += len(item)
            if keys > limit:
                return True
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def phx_ref() -> str:
    """An opaque unique ref, as Phoenix makes them (base64 of 8 random bytes)."""
    return base64.b64encode(os.urandom(8)).decode()


def node_key(node: str) -> str:
    """The liveness key a running process refreshes (`NODE_TTL` seconds)."""
    return f"herald:node:{node}"


async def living_nodes(redis: Any, nodes: Iterable[str]) -> set[str]:
    ordered = sorted(set(nodes))
    found = await redis.mget([node_key(n) for n in ordered]) if ordered else []
    return {node for node, value in zip(ordered, found, strict=True) if value}


def entry_field(node: str, connection: str) -> str:
    return f"{node}|{connection}"


def field_node(field: str) -> str:
    return field.rpartition("|")[0]


def state_payload(entries: Iterable[Entry]) -> dict[str, Any]:
    """`{key: {"metas": [meta, …]}}`, Phoenix.Presence's grouping."""
    state: dict[str, Any] = {}
    for entry in entries:
        state.setdefault(entry["key"], {"metas": []})["metas"].append(entry["meta"])
    return state


def diff_payload(
    joins: Iterable[Entry] = (), leaves: Iterable[Entry] = ()
) -> dict[str, Any]:
    return {"joins": state_payload(joins), "leaves": state_payload(leaves)}


class PresenceStore(Protocol):
    async def put(self, room: str, field: str, entry: Entry) -> None: ...

    async def remove(self, room: str, field: str) -> Entry | None: ...

    async def entries(self, room: str) -> dict[str, Entry]: ...

    async def alive(self, node: str) -> None: ...

    async def dead_fields(self, room: str) -> dict[str, Entry]: ...


class MemoryPresence:
    """One process holds everything; it never sees another process die."""

    def __init__(self) -> None:
        self.rooms: dict[str, dict[str, Entry]] = {}

    async def put(self, room: str, field: str, entry: Entry) -> None:
        self.rooms.setdefault(room, {})[field] = entry

    async def remove(self, room: str, field: str) -> Entry | None:
        entries = self.rooms.get(room, {})
        entry = entries.pop(field, None)
        if not entries:
            self.rooms.pop(room, None)
        return entry

    async def entries(self, room: str) -> dict[str, Entry]:
        return dict(self.rooms.get(room, {}))

    async def alive(self, node: str) -> None:
        return None

    async def dead_fields(self, room: str) -> dict[str, Entry]:
        return {}


class RedisPresence:
    """A hash per room; liveness keys per process (`herald:node:<node>`)."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis

    @staticmethod
    def _room(room: str) -> str:
        return f"herald:presence:{room}"

    async def put(self, room: str, field: str, entry: Entry) -> None:
        await self.redis.hset(self._room(room), field, orjson.dumps(entry))

    async def remove(self, room: str, field: str) -> Entry | None:
        # HGET and HDEL in one transaction: of two processes sweeping the same
        # dead entry, exactly one gets it back (and announces the leave).
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hget(self._room(room), field)
            pipe.hdel(self._room(room), field)
            raw, removed = await pipe.execute()
        return orjson.loads(raw) if raw is not None and removed else None

    async def _all(self, room: str) -> dict[str, Entry]:
        raw = await self.redis.hgetall(self._room(room))
        return {_text(f): orjson.loads(v) for f, v in raw.items()}

    async def entries(self, room: str) -> dict[str, Entry]:
        everything = await self._all(room)
        living = await living_nodes(self.redis, map(field_node, everything))
        return {f: e for f, e in everything.items() if field_node(f) in living}

    async def dead_fields(self, room: str) -> dict[str, Entry]:
        everything = await self._all(room)
        living = await living_nodes(self.redis, map(field_node, everything))
        return {f: e for f, e in everything.items() if field_node(f) not in living}

    async def alive(self, node: str) -> None:
        await self.redis.set(node_key(node), b"1", ex=NODE_TTL)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def redis_client() -> Any:
    """A Redis client for this process's shared state, or None without Redis."""
    if not settings.REDIS_URL:
        return None
    import redis.asyncio as redis

    options: dict[str, Any] = settings.REDIS_POOL_OPTIONS
    return redis.Redis.from_url(settings.REDIS_URL, **options)


def presence_store(redis: Any) -> PresenceStore:
    return RedisPresence(redis) if redis is not None else MemoryPresence()
