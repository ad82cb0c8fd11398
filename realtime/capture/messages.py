"""SQL for broadcasts from the database: `herald_send`.

A herald_messages row records the transaction that wrote it (its `xid`
column, PostgreSQL); the relay reads rows in (xid, id) order below the oldest
running transaction, so a message committed late is never skipped and no
writer waits for another (realtime/change_log.py). SQLite serializes writers.
"""

from __future__ import annotations


def postgres_install(*, schema: str) -> list[str]:
    s = '"' + schema.replace('"', '""') + '"'
    return [
        f"""CREATE OR REPLACE FUNCTION {s}.herald_send(
    tenant_slug text, topic text, event text, payload jsonb,
    private boolean DEFAULT false
) RETURNS void
LANGUAGE sql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $herald$
    INSERT INTO {s}.herald_messages (tenant_slug, topic, event, payload, private)
    VALUES (tenant_slug, topic, event, payload, private);
$herald$""",
    ]


def postgres_uninstall(*, schema: str) -> list[str]:
    s = '"' + schema.replace('"', '""') + '"'
    return [
        f"DROP FUNCTION IF EXISTS {s}.herald_send(text, text, text, jsonb, boolean)",
        f"DROP TRIGGER IF EXISTS herald_messages_order ON {s}.herald_messages",
        f"DROP FUNCTION IF EXISTS {s}.herald_messages_order()",
    ]
