"""ORM work from async code, and what a database outage turns into.

Sockets outlive a database outage: joins are refused with Supabase's
`UnableToConnectToProject` reason, bookkeeping writes are skipped (and
logged), and heartbeats, broadcast and presence carry on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from channels.db import database_sync_to_async
from django.db import InterfaceError, OperationalError, transaction

from realtime.errors import DatabaseUnavailable

logger = logging.getLogger(__name__)
T = TypeVar("T")

OUTAGE = (OperationalError, InterfaceError)


async def in_db(fn: Callable[..., T], /, **kwargs: Any) -> T:
    """Run `fn` off the event loop; an outage becomes DatabaseUnavailable."""
    try:
        return await database_sync_to_async(fn)(**kwargs)
    except OUTAGE as exc:
        logger.warning("Database unavailable for %s: %s", fn.__name__, exc)
        raise DatabaseUnavailable() from exc


async def best_effort(fn: Callable[..., Any], /, **kwargs: Any) -> None:
    """A write the socket does not depend on (activity, bookkeeping)."""
    try:
        await database_sync_to_async(fn)(**kwargs)
    except OUTAGE as exc:
        logger.warning("Skipped %s, database unavailable: %s", fn.__name__, exc)


def on_commit(fn: Callable[..., Any], /, **kwargs: Any) -> None:
    """Run `fn(**kwargs)` once the transaction commits; a failure is logged.

    The committed write stands either way (catch-up recovers what a channel
    layer outage kept from live delivery). A named function, not a
    functools.partial: Django's robust on_commit logs a failure with the
    callback's __qualname__, which a partial lacks, and would raise instead.
    """

    def after_commit() -> None:
        fn(**kwargs)

    after_commit.__qualname__ = f"after_commit[{fn.__qualname__}]"
    # What it was given, for code that looks for its own pending hook.
    after_commit.herald_kwargs = kwargs  # type: ignore[attr-defined]
    transaction.on_commit(after_commit, robust=True)
