"""Socket bookkeeping written in batches: one thread hop, one transaction.

Every connect, join, leave and disconnect writes a row (the activity log, a
subscription). One by one, each paid a hop to the database thread, a
connection (none are kept by default) and a commit flush, so a reconnect
storm after a deploy joined a few dozen sockets a second. A `Batched`
function queues its calls while the previous batch is in the database, and
writes all of them next: under load, batches grow by themselves; alone, a
call waits for nothing but its own write.

A batch that fails as a whole (one hostile row, say) is retried one call at a
time, so a bad call fails alone and the others still succeed.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from realtime.db import in_db

logger = logging.getLogger(__name__)

# Calls written in one transaction at most.
BATCH_LIMIT = 500

# fn(items=[kwargs, ...]) → one result per item, an exception instance for an
# item that failed on its own.
Many = Callable[..., Sequence[Any]]


class Batched:
    """Calls of `many`, queued and written together (one per event loop)."""

    def __init__(self, many: Many) -> None:
        self.many = many
        self.pending: list[tuple[dict[str, Any], asyncio.Future[Any]]] = []
        self.draining: asyncio.Task[None] | None = None

    async def __call__(self, **kwargs: Any) -> Any:
        future = asyncio.get_running_loop().create_future()
        self.pending.append((kwargs, future))
        if self.draining is None:
            self.draining = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self.pending:
                batch = self.pending[:BATCH_LIMIT]
                del self.pending[:BATCH_LIMIT]
                await self._write(batch)
        finally:
            self.draining = None

    async def _write(self, batch: list[tuple[dict[str, Any], Any]]) -> None:
        try:
            results = await in_db(self.many, items=[kwargs for kwargs, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0][1], exc)
                return
            logger.warning("A batch of %s failed; writing one by one", self.many)
            for item in batch:
                await self._write([item])
            return
        for (_, future), result in zip(batch, results, strict=True):
            _settle(future, result)


def _settle(future: asyncio.Future[Any], result: Any) -> None:
    if future.done():  # its caller went away (the socket closed)
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


_registry: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Many, Batched]] = (
    weakref.WeakKeyDictionary()
)


def batched(many: Many) -> Batched:
    """This event loop's batcher of `many`."""
    found = _registry.setdefault(asyncio.get_running_loop(), {})
    if many not in found:
        found[many] = Batched(many)
    return found[many]
