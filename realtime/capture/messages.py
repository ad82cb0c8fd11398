"""SQL for broadcasts from the database: `herald_messages` and `herald_send`.

On PostgreSQL, ids come from a sequence when a row is inserted, but
transactions commit in any order; the relay reads a tenant's messages "after
id N", so a BEFORE INSERT trigger takes a per-tenant transaction lock and only
then draws the id: a tenant's message ids commit in order (as its change
cursors do, realtime/services/changes.py). SQLite serializes writers.
"""

from __future__ import annotations

# Not the change log's namespace: broadcasts and changes do not wait on
# each other.
MESSAGE_LOCK_NAMESPACE = 7_211_102


def postgres_install(*, schema: str) -> list[str]:
    s = '"' + schema.replace('"', '""') + '"'
    return [
        f"""CREATE OR REPLACE FUNCTION {s}.herald_messages_order() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $herald$
BEGIN
    PERFORM pg_advisory_xact_lock({MESSAGE_LOCK_NAMESPACE}, hashtext(NEW.tenant_slug));
    NEW.id := nextval(pg_get_serial_sequence('{s}.herald_messages', 'id'));
    RETURN NEW;
END
$herald$""",
        f"DROP TRIGGER IF EXISTS herald_messages_order ON {s}.herald_messages",
        f"CREATE TRIGGER herald_messages_order BEFORE INSERT ON {s}.herald_messages "
        f"FOR EACH ROW EXECUTE FUNCTION {s}.herald_messages_order()",
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
