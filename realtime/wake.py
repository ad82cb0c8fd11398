"""Waking the relays once a write of Herald's own commits.

Writes from elsewhere (psql, another program) are found by the relays' poll;
Herald's own writes hint every relay over the channel layer at once. A
transaction sends one hint, however many rows it wrote.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import connection
from redis.exceptions import RedisError

from realtime.db import on_commit
from realtime.layer import wake_send

logger = logging.getLogger(__name__)

PENDING_ATTR = "_herald_wake_pending"


def wake_on_commit(*, tenant_id: int | None) -> None:
    """Hint the relays about `tenant_id` once the current transaction commits."""
    pending: set[int | None] | None = getattr(connection, PENDING_ATTR, None)
    if pending is not None and _registered(pending):
        pending.add(tenant_id)
        return
    pending = {tenant_id}
    setattr(connection, PENDING_ATTR, pending)
    on_commit(_send, pending=pending)


def _registered(pending: set[int | None]) -> bool:
    """Whether this set's hook still waits for the commit: a rollback drops it."""
    for entry in getattr(connection, "run_on_commit", []):
        hook: Any = entry[1]
        if getattr(hook, "herald_kwargs", {}).get("pending") is pending:
            return True
    return False


def _send(*, pending: set[int | None]) -> None:
    if getattr(connection, PENDING_ATTR, None) is pending:
        delattr(connection, PENDING_ATTR)
    try:
        wake_send(sorted(pending, key=lambda t: -1 if t is None else t))
    except (RedisError, OSError) as exc:
        # Only a hint: the relays' poll finds the committed rows anyway.
        logger.warning("Could not wake the relays: %r", exc)
