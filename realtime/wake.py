"""Waking the relays once a write of Herald's own commits.

Writes from elsewhere (psql, another program) are found by the relays' poll;
Herald's own writes hint every relay over the channel layer at once. A
transaction sends one hint, however many rows it wrote.

With HERALD_RELAY_NOTIFY (PostgreSQL, off by default), statement triggers on
the change log and herald_messages NOTIFY the relays, which LISTEN: a write
from any program wakes them at its commit. Off by default because a
transaction that has notified takes a database-wide lock at commit, so every
notifying commit waits for the one before it.
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
NOTIFY_CHANNEL = "herald_relay"
NOTIFY_TABLES = ("realtime_liveupdate", "herald_messages")


def notify_sql(*, enabled: bool) -> list[str]:
    """Statements installing (or dropping) the NOTIFY statement triggers."""
    drop = [
        f"DROP TRIGGER IF EXISTS herald_relay_notify ON {table}"
        for table in NOTIFY_TABLES
    ]
    if not enabled:
        return [*drop, "DROP FUNCTION IF EXISTS herald_relay_notify()"]
    function = f"""CREATE OR REPLACE FUNCTION herald_relay_notify() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $herald$
BEGIN
    PERFORM pg_notify('{NOTIFY_CHANNEL}', '');
    RETURN NULL;
END
$herald$"""
    create = [
        f"CREATE TRIGGER herald_relay_notify AFTER INSERT ON {table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION herald_relay_notify()"
        for table in NOTIFY_TABLES
    ]
    return [function, *drop, *create]


def notify_install(*, enabled: bool, using: str = "default", **kwargs: Any) -> None:
    """Follow HERALD_RELAY_NOTIFY after each migrate (PostgreSQL only)."""
    from django.db import connections

    target = connections[using]
    if target.vendor != "postgresql":
        return
    with target.cursor() as cursor:
        if not enabled:
            # After every test flush too: no DDL (and its table lock) when
            # there is nothing to drop.
            cursor.execute(
                "SELECT 1 FROM pg_proc WHERE proname = 'herald_relay_notify'"
            )
            if cursor.fetchone() is None:
                return
        for statement in notify_sql(enabled=enabled):
            cursor.execute(statement)


def notify_follow_setting(*, using: str = "default", **kwargs: Any) -> None:
    """post_migrate: install the NOTIFY triggers when the setting is on, else drop."""
    from django.conf import settings

    notify_install(enabled=settings.HERALD_RELAY_NOTIFY, using=using)


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
