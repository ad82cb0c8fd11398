"""Counters behind the per-tenant limits, shared by every server process.

Concurrent holds (connections per tenant and per user) are kept per process
in a Redis hash and summed over the processes that are still alive, so a
process that dies stops counting once its liveness key lapses. Rates (joins,
presence events per second) are fixed one-second windows. Without Redis, the
one process counts in memory.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any, Protocol

from realtime.presence import living_nodes


class Counters(Protocol):
    async def hold(self, key: str, node: str, limit: int) -> bool: ...

    async def release(self, key: str, node: str) -> None: ...

    async def hit(self, key: str, limit: int) -> bool: ...


def _window() -> int:
    return int(time.time())


class MemoryCounters:
    def __init__(self) -> None:
        self.held: dict[str, int] = defaultdict(int)
        self.rates: dict[tuple[str, int], int] = defaultdict(int)

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


class RedisCounters:
    def __init__(self, redis: Any) -> None:
        self.redis = redis

    async def hold(self, key: str, node: str, limit: int) -> bool:
        name = f"herald:hold:{key}"
        await self.redis.hincrby(name, node, 1)
        counts = {
            k.decode(): int(v) for k, v in (await self.redis.hgetall(name)).items()
        }
        living = await living_nodes(self.redis, counts)
        dead = [n for n in counts if n not in living and n != node]
        if dead:  # a process that died holds nothing any more
            await self.redis.hdel(name, *dead)
        total = sum(v for n, v in counts.items() if n in living or n == node)
        if total > limit:
            await self.redis.hincrby(name, node, -1)
            return False
        return True

    async def release(self, key: str, node: str) -> None:
        await self.redis.hincrby(f"herald:hold:{key}", node, -1)

    async def hit(self, key: str, limit: int) -> bool:
        name = f"herald:rate:{key}:{_window()}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(name)
            pipe.expire(name, 2)
            count, _ = await pipe.execute()
        return int(count) <= limit


def counters(redis: Any) -> Counters:
    return RedisCounters(redis) if redis is not None else MemoryCounters()
