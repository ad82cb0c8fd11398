"""Order the change log and herald_messages by transaction, not by a lock.

PostgreSQL only: each row records the id of the transaction that wrote it
(an `xid8` column whose DEFAULT is pg_current_xact_id(), so no INSERT, and no
capture trigger, has to name it). Readers read only rows of transactions older
than every running one (pg_snapshot_xmin), in (xid, id) order: see
realtime/change_log.py. The per-tenant advisory lock that serialized a tenant's
writers until their commit is gone, with herald_messages' ordering trigger.
SQLite serializes writers: nothing to do there.
"""

from django.db import migrations

FORWARD = [
    "ALTER TABLE realtime_liveupdate ADD COLUMN xid xid8 NOT NULL "
    "DEFAULT pg_current_xact_id()",
    "CREATE INDEX liveupdate_commit_order ON realtime_liveupdate (xid, id)",
    "CREATE INDEX liveupdate_tenant_commit_order "
    "ON realtime_liveupdate (tenant_id, xid, id)",
    "ALTER TABLE herald_messages ADD COLUMN xid xid8 NOT NULL "
    "DEFAULT pg_current_xact_id()",
    "CREATE INDEX herald_messages_commit_order ON herald_messages (xid, id)",
    "DROP TRIGGER IF EXISTS herald_messages_order ON herald_messages",
    "DROP FUNCTION IF EXISTS herald_messages_order()",
]

BACKWARD = [
    "ALTER TABLE herald_messages DROP COLUMN IF EXISTS xid",
    "ALTER TABLE realtime_liveupdate DROP COLUMN IF EXISTS xid",
]


def forward(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        for statement in FORWARD:
            cursor.execute(statement)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        for statement in BACKWARD:
            cursor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [
        ("realtime", "0008_broadcast_replay"),
    ]

    operations = [migrations.RunPython(forward, backward)]
