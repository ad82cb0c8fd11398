"""Redis work of many sockets, sent together: one round trip, one connection.

A reconnect storm's sockets each count themselves against the limits (a
hold, a rate) and join their topics' groups: a few Redis commands each. Sent
one by one, each socket waiting on Redis took a pooled connection of its own:
a storm opened about as many connections as it had sockets in flight (1.5 per
join, measured by `make bench-joins`), each a TCP connect and a handshake, and
past the pool's size sockets were refused with "Too many connections". Here,
calls made while the previous batch is in Redis are queued and sent next, in
one pipeline: under load, batches grow by themselves; alone, a call waits for
nothing but its own round trip.

Each call's commands stay together and in order in the pipeline. It is not a
transaction: another client's commands may come between two calls' commands
(never inside a Lua script), as they could before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Calls sent in one batch at most.
BATCH_LIMIT = 1000

# Adds one call's commands to a pipeline.
Step = Callable[[Any], Any]


class Coalesced(Generic[T, R]):
    """Calls of `send`, queued while the previous batch is in flight.

    `send(items)` returns one result per item, an exception instance for an
    item that failed alone; if it raises, every item of the batch fails with
    that exception. One instance serves one event loop at a time.
    """

    def __init__(
        self, send: Callable[[list[T]], Awaitable[Sequence[Any]]], limit: int = 0
    ) -> None:
        self.send = send
        self.limit = limit or BATCH_LIMIT
        self.pending: list[tuple[T, asyncio.Future[Any]]] = []
        self.draining: asyncio.Task[None] | None = None

    async def __call__(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        if self.draining is not None and self.draining.get_loop() is not loop:
            self.pending, self.draining = [], None  # its loop was closed
        future = loop.create_future()
        self.pending.append((item, future))
        if self.draining is None:
            self.draining = asyncio.create_task(self._drain())
        result: R = await future
        return result

    async def _drain(self) -> None:
        try:
            while self.pending:
                batch = self.pending[: self.limit]
                del self.pending[: self.limit]
                await self._send(batch)
        finally:
            self.draining = None

    async def _send(self, batch: list[tuple[T, asyncio.Future[Any]]]) -> None:
        try:
            results = await self.send([item for item, _ in batch])
        except Exception as exc:
            for _, future in batch:
                _settle(future, exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            _settle(future, result)


def _settle(future: asyncio.Future[Any], result: Any) -> None:
    if future.done():  # its caller went away
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


class Pipelined(Coalesced[Step, list[Any]]):
    """A Redis client's commands, pipelined across concurrent callers.

    `await pipelined(lambda pipe: pipe.incr(k).expire(k, 2))` answers that
    call's replies, in order; a command error (a reply Redis refused) raises
    it, for that caller only. A lost connection fails the whole batch.
    """

    def __init__(self, redis: Any) -> None:
        super().__init__(self._execute)
        self.redis = redis

    async def _execute(self, steps: list[Step]) -> list[Any]:
        sizes = []
        async with self.redis.pipeline(transaction=False) as pipe:
            for step in steps:
                before = len(pipe)
                step(pipe)
                sizes.append(len(pipe) - before)
            replies = await pipe.execute(raise_on_error=False)
        results: list[Any] = []
        start = 0
        for size in sizes:
            mine = replies[start : start + size]
            start += size
            error = next((r for r in mine if isinstance(r, Exception)), None)
            results.append(error if error is not None else mine)
        return results
