"""Starting and stopping capture on a table: triggers and their TrackedTable row."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

from django.db import connection, models, transaction

from audit.models import EventType
from audit.services import activity_record
from realtime import errors
from realtime.capture import postgres, sql
from realtime.columns import columns_for_model
from realtime.models import Tenant, TrackedTable
from realtime.validators import is_identifier

logger = logging.getLogger(__name__)


def _schema() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_schema()")
        return cursor.fetchone()[0]


def _table_columns(db_table: str) -> list[sql.Column]:
    """The columns of a table as the database describes it (SQLite)."""
    with connection.cursor() as cursor:
        cursor.execute(f"PRAGMA table_info({sql.quote_name(db_table)})")
        return [sql.sqlite_column(row[1], row[2] or "") for row in cursor.fetchall()]


def _column_names(db_table: str) -> set[str]:
    with connection.cursor() as cursor:
        description = connection.introspection.get_table_description(cursor, db_table)
    return {c.name for c in description}


def _primary_key(db_table: str) -> str | None:
    """The table's primary key column, when it has exactly one."""
    with connection.cursor() as cursor:
        found = connection.introspection.get_primary_key_columns(cursor, db_table)
    return found[0] if found and len(found) == 1 else None


def _with_catalog_columns(spec: sql.Spec) -> sql.Spec:
    """The spec with the table's columns as PostgreSQL names their types."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT a.attname, ty.typname FROM pg_attribute a "
            "JOIN pg_type ty ON ty.oid = a.atttypid WHERE a.attrelid = %s::regclass "
            "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            [sql.quote_name(spec.db_table)],
        )
        columns = tuple(sql.Column(name, type_) for name, type_ in cursor.fetchall())
    return dataclasses.replace(spec, columns=columns)


def _signature(db_table: str) -> str:
    """What the trigger compares with the catalog to see the table altered."""
    with connection.cursor() as cursor:
        cursor.execute(
            postgres.SIGNATURE_SQL.format(relation="%s::regclass"),
            [sql.quote_name(db_table)],
        )
        return cursor.fetchone()[0] or ""


def triggers_install(spec: sql.Spec) -> None:
    """(Re)create a table's capture triggers; idempotent."""
    if connection.vendor == "postgresql":
        statements = postgres.postgres_install(
            _with_catalog_columns(spec),
            schema=_schema(),
            pk=_primary_key(spec.db_table),
            signature=_signature(spec.db_table),
        )
    elif connection.vendor == "sqlite":
        statements = sql.sqlite_install(spec)
    else:
        raise errors.InvalidInput(
            f"capture needs PostgreSQL or SQLite, not {connection.vendor}"
        )
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def triggers_uninstall(db_table: str) -> None:
    if connection.vendor == "postgresql":
        statements = sql.postgres_uninstall(db_table, schema=_schema())
    else:
        statements = sql.sqlite_uninstall(db_table)
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def _spec_of(tracked: TrackedTable, columns: Sequence[sql.Column] = ()) -> sql.Spec:
    if connection.vendor == "sqlite" and not columns:
        columns = _table_columns(tracked.db_table)
    return sql.Spec(
        db_table=tracked.db_table,
        table=tracked.table,
        tenant_kind=tracked.tenant_kind,
        tenant_value=tracked.tenant_value,
        exclude=tuple(tracked.exclude),
        columns=tuple(columns),
    )


def table_check(
    db_table: str, tenant_kind: str, tenant_value: str, exclude: Sequence[str]
) -> None:
    for name in [db_table, *exclude] + (
        [tenant_value] if tenant_kind != "fixed" else []
    ):
        if not is_identifier(name):
            raise errors.InvalidInput(f"{name!r} is not a plain identifier")
    if db_table not in connection.introspection.table_names():
        raise errors.InvalidInput(f"No table {db_table!r}")
    present = _column_names(db_table)
    missing = [c for c in exclude if c not in present]
    if tenant_kind != "fixed" and tenant_value not in present:
        missing.append(tenant_value)
    if missing:
        raise errors.InvalidInput(f"{db_table} has no column {', '.join(missing)}")
    if tenant_kind == "fixed" and not Tenant.objects.filter(slug=tenant_value).exists():
        raise errors.InvalidInput(f"No tenant {tenant_value!r}")


def table_track(
    *,
    db_table: str,
    tenant_slug: str | None = None,
    tenant_column: str | None = None,
    exclude: Sequence[str] = (),
    actor: str = "",
) -> TrackedTable:
    """Record every write to a table as a change: `--tenant` or `--tenant-column`.

    Idempotent: run again, it regenerates the triggers (on SQLite, a column
    added since then appears in later changes only after this).
    """
    if (tenant_slug is None) == (tenant_column is None):
        raise errors.InvalidInput("name a tenant, or the column holding its slug")
    kind, value = ("fixed", tenant_slug) if tenant_slug else ("slug", tenant_column)
    assert value is not None
    table_check(db_table, kind, value, exclude)
    with transaction.atomic():
        tracked, created = TrackedTable.objects.update_or_create(
            db_table=db_table,
            defaults={
                "table": db_table,
                "tenant_kind": kind,
                "tenant_value": value,
                "exclude": list(exclude),
                "source": TrackedTable.Source.COMMAND,
            },
        )
        triggers_install(_spec_of(tracked))
        activity_record(
            event_type=EventType.TABLE_TRACKED,
            tenant=Tenant.objects.filter(slug=value).first()
            if kind == "fixed"
            else None,
            actor=actor,
            target=db_table,
            details={
                "tenant": kind,
                "value": value,
                "exclude": list(exclude),
                "again": not created,
            },
        )
    logger.info("Capturing changes of %s (tenant %s %s)", db_table, kind, value)
    return tracked


def tracked_tables_refresh() -> int:
    """Regenerate the triggers of tables tracked by command (post_migrate).

    An upgrade of Herald may change the trigger's form: `migrate` brings every
    tracked table to it. A table dropped since it was tracked is skipped and
    logged (its row stays, so tracking resumes if it comes back).
    """
    existing = set(connection.introspection.table_names())
    refreshed = 0
    for tracked in TrackedTable.objects.filter(source=TrackedTable.Source.COMMAND):
        if tracked.db_table not in existing:
            logger.warning("Tracked table %s does not exist; skipped", tracked.db_table)
            continue
        triggers_install(_spec_of(tracked))
        refreshed += 1
    return refreshed


def table_untrack(*, db_table: str, actor: str = "") -> bool:
    """Stop recording a table's writes; False when it was not tracked."""
    with transaction.atomic():
        deleted, _ = TrackedTable.objects.filter(db_table=db_table).delete()
        if db_table in connection.introspection.table_names():
            triggers_uninstall(db_table)
        if deleted:
            activity_record(
                event_type=EventType.TABLE_UNTRACKED, actor=actor, target=db_table
            )
    if deleted:
        logger.info("No longer capturing changes of %s", db_table)
    return bool(deleted)


def model_columns(model: type[models.Model]) -> list[sql.Column]:
    """A model's columns, with what SQLite triggers must convert."""
    types = {c["name"]: c["type"] for c in columns_for_model(model)}
    found = []
    for f in model._meta.concrete_fields:
        internal = f.get_internal_type()
        kind = {
            "BooleanField": "bool",
            "JSONField": "json",
            "DateTimeField": "datetime",
            "UUIDField": "uuid",
        }.get(internal, "plain")
        if internal == "DecimalField":
            kind = f"decimal:{f.decimal_places}"  # type: ignore[attr-defined]
        found.append(sql.Column(f.column or f.attname, types[f.attname], kind))
    return found


def model_track(
    *, model: type[models.Model], table: str, tenant_kind: str, tenant_value: str
) -> None:
    """Install (or refresh) a tracked model's triggers; run after migrate."""
    db_table = model._meta.db_table
    tables = connection.introspection.table_names()
    if db_table not in tables or TrackedTable._meta.db_table not in tables:
        return  # migrated backwards, or not yet
    with transaction.atomic():
        tracked, _ = TrackedTable.objects.update_or_create(
            db_table=db_table,
            defaults={
                "table": table,
                "tenant_kind": tenant_kind,
                "tenant_value": tenant_value,
                "exclude": [],
                "source": TrackedTable.Source.MODEL,
            },
        )
        triggers_install(_spec_of(tracked, model_columns(model)))


def tenant_changes_discard(*, tenant_id: int) -> None:
    """After a tenant's rows are deleted: drop the changes their deletion wrote.

    Deleting a tenant cascades to its tracked rows, whose DELETE triggers
    record changes for the tenant while it still exists, after the cascade
    already removed its change log; the tenant's own delete would then fail
    the foreign key at commit. Nobody could read those changes anyway.
    """
    from realtime.models import LiveUpdate

    LiveUpdate.objects.filter(tenant_id=tenant_id).delete()
