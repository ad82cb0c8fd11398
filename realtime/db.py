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
from django.db import InterfaceError, OperationalError

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
