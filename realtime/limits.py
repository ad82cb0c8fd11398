"""Counters behind the per-tenant limits, shared by every server process.

Concurrent holds (connections per tenant and per user) are kept per process
in a Redis hash and summed over the processes that are still alive, so a
process that dies stops counting once its liveness key lapses. Rates (joins,
presence events per second) are fixed one-second windows. Without Redis, the
one process counts in memory.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import defaultdict
from typing import Any, Protocol

from redis.exceptions import NoScriptError, RedisError

from realtime.pipelined import Pipelined
from realtime.presence import node_key

logger = logging.getLogger(__name__)


class Counters(Protocol):
    async def hold(self, key: str, node: str, limit: int) -> bool: ...

    async def release(self, key: str, node: str) -> None: ...

    async def hit(self, key: str, limit: int) -> bool: ...

    async def add_deliveries(self, counts: dict[int, int]) -> None: ...

    async def server_id(self) -> str: ...

    async def restore(self, node: str, holds: dict[str, int]) -> None: ...


def _window() -> int:
    return int(time.time())


class MemoryCounters:
    def __init__(self) -> None:
        self.held: dict[str, int] = defaultdict(int)
        self.rates: dict[tuple[str, int], int] = defaultdict(int)
        # (tenant id, minute) → frames delivered
        self.tally: dict[tuple[int, int], int] = defaultdict(int)

    async def server_id(self) -> str:
        return "memory"

    async def restore(self, node: str, holds: dict[str, int]) -> None:
        return None

    async def add_deliveries(self, counts: dict[int, int]) -> None:
        minute = int(time.time() // 60)
        for stale in [k for k in self.tally if k[1] < minute - 1]:
            del self.tally[stale]
        for tenant_id, count in counts.items():
            self.tally[tenant_id, minute] += count

    async def hold(self, key: str, node: str, limit: int) -> bool:
        if self.held[key] >= limit:
            return False
        self.held[key] += 1
        return True

    async def release(self, key: str, node: str) -> None:
        self.held[key] = max(0, self.held[key] - 1)

    async def hit(self, key: str, limit: int) -> bool:
        window = _window()
        for stale in [k for k in self.rates if k[1] < window]:
            del self.rates[stale]
        self.rates[key, window] += 1
        return self.rates[key, window] <= limit


# One hold, atomically: count the socket in, then sum the counts of the
# processes still alive (a liveness key each), dropping the dead ones' counts;
# over the limit, the socket is counted out again. KEYS[1] is the hold's hash;
# ARGV: this process, the limit, the liveness keys' prefix. Returns 1 if held.
HOLD_SCRIPT = """
local name, node, limit, prefix = KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3]
redis.call('HINCRBY', name, node, 1)
local counts = redis.call('HGETALL', name)
local total, dead = 0, {}
for i = 1, #counts, 2 do
  local other = counts[i]
  if other == node or redis.call('EXISTS', prefix .. other) == 1 then
    total = total + tonumber(counts[i + 1])
  else
    dead[#dead + 1] = other
  end
end
for i = 1, #dead do
  redis.call('HDEL', name, dead[i])
end
if total > limit then
  redis.call('HINCRBY', name, node, -1)
  return 0
end
return 1
"""
HOLD_SHA = hashlib.sha1(HOLD_SCRIPT.encode()).hexdigest()  # noqa: S324 - Redis's name


class RedisCounters:
    """The shared counters. A storm's holds, releases and rate hits share
    pipelines (realtime/pipelined.py): one round trip and one connection for
    all that arrive together, a hold being one script."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self.pipelined = Pipelined(redis)

    async def hold(self, key: str, node: str, limit: int) -> bool:
        name = f"herald:hold:{key}"
        prefix = node_key("")

        def step(pipe: Any) -> None:
            pipe.evalsha(HOLD_SHA, 1, name, node, limit, prefix)

        try:
            (held,) = await self.pipelined(step)
        except NoScriptError:  # a Redis that has not seen it (or restarted)
            await self.redis.script_load(HOLD_SCRIPT)
            (held,) = await self.pipelined(step)
        return bool(held)

    async def release(self, key: str, node: str) -> None:
        await self.pipelined(lambda pipe: pipe.hincrby(f"herald:hold:{key}", node, -1))

    async def server_id(self) -> str:
        """The Redis server's run id: a new one means a restart forgot everything."""
        return str((await self.redis.info("server"))["run_id"])

    async def restore(self, node: str, holds: dict[str, int]) -> None:
        for key, count in holds.items():
            if count:
                await self.redis.hset(f"herald:hold:{key}", node, count)

    async def add_deliveries(self, counts: dict[int, int]) -> None:
        minute = int(time.time() // 60)
        async with self.redis.pipeline(transaction=False) as pipe:
            for tenant_id, count in counts.items():
                name = f"herald:deliveries:{tenant_id}:{minute}"
                pipe.incrby(name, count)
                pipe.expire(name, 180)
            await pipe.execute()

    async def hit(self, key: str, limit: int) -> bool:
        """Count one event in this second's window; within the limit?

        A Redis that cannot count lets the event through, as the REST limits
        do (RATELIMIT_FAIL_OPEN): a join or a presence event must not fail
        for want of a counter.
        """
        name = f"herald:rate:{key}:{_window()}"
        try:
            count, _ = await self.pipelined(
                lambda pipe: pipe.incr(name).expire(name, 2)
            )
        except RedisError as exc:
            logger.warning("Rate %s not counted, Redis unavailable: %s", key, exc)
            return True
        return int(count) <= limit


def counters(redis: Any) -> Counters:
    return RedisCounters(redis) if redis is not None else MemoryCounters()


# --- Reading the shared figures from sync code (the dashboard) ----------------


def _sync_redis() -> Any:
    import redis as redis_sync
    from django.conf import settings

    return redis_sync.Redis.from_url(settings.REDIS_URL) if settings.REDIS_URL else None


def _memory_counters() -> MemoryCounters | None:
    """The embedded default's one hub, if this process runs one."""
    from realtime.hub import running_hubs

    for found in running_hubs():
        if isinstance(found.counters, MemoryCounters):
            return found.counters
    return None


def connections_now(tenant_ids: list[int]) -> dict[int, int]:
    """Open sockets per tenant, over every living process."""
    client = _sync_redis()
    if client is None:
        memory = _memory_counters()
        held = memory.held if memory else {}
        return {t: held.get(f"conn:{t}", 0) for t in tenant_ids}
    result = {}
    for tenant_id in tenant_ids:
        counts = {
            k.decode(): int(v)
            for k, v in client.hgetall(f"herald:hold:conn:{tenant_id}").items()
        }
        nodes = sorted(counts)
        alive = client.mget([node_key(n) for n in nodes]) if nodes else []
        result[tenant_id] = sum(
            counts[n] for n, a in zip(nodes, alive, strict=True) if a
        )
    return result


def deliveries_last_minute(tenant_ids: list[int]) -> dict[int, int]:
    """Frames delivered per tenant over the last full minute and this one so far."""
    client = _sync_redis()
    minute = int(time.time() // 60)
    if client is None:
        memory = _memory_counters()
        tally = memory.tally if memory else {}
        return {
            t: tally.get((t, minute), 0) + tally.get((t, minute - 1), 0)
            for t in tenant_ids
        }
    keys = [
        k
        for t in tenant_ids
        for k in (
            f"herald:deliveries:{t}:{minute - 1}",
            f"herald:deliveries:{t}:{minute}",
        )
    ]
    values = client.mget(keys) if keys else []
    found = [int(v or 0) for v in values]
    return {t: found[2 * i] + found[2 * i + 1] for i, t in enumerate(tenant_ids)}
