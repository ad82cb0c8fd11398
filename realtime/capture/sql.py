"""The SQL of capture triggers, for PostgreSQL (PL/pgSQL) and SQLite.

Pure functions: a `Spec` in, statements out. Names are plain identifiers
(realtime.validators) checked before they get here, and quoted anyway.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

PREFIX = "herald_capture_"


@dataclass(frozen=True, slots=True)
class Column:
    """A column as SQLite triggers must convert it (PostgreSQL needs none)."""

    name: str
    pg_type: str  # the Postgres type name sent in `columns`
    kind: str = "plain"  # plain, bool, json, datetime, uuid, decimal:<places>


@dataclass(frozen=True, slots=True)
class Spec:
    """What one tracked table records, and under which tenant."""

    db_table: str  # the table the triggers are on
    table: str  # the name changes are published under
    tenant_kind: str  # "id" or "slug" (a column), or "fixed" (a slug)
    tenant_value: str  # the column name, or the fixed tenant's slug
    exclude: tuple[str, ...] = ()
    columns: tuple[Column, ...] = field(default=())  # SQLite only


def quote_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def function_name(db_table: str) -> str:
    return (PREFIX + db_table)[:63]


def tenant_condition(spec: Spec, ref: str) -> str:
    """SQL true for the tenant row the changed row belongs to."""
    if spec.tenant_kind == "fixed":
        return f"t.slug = {quote_literal(spec.tenant_value)}"
    column = f"{ref}.{quote_name(spec.tenant_value)}"
    if spec.tenant_kind == "id":
        return f"t.id = {column}"
    return f"t.slug = {column}"


# --- PostgreSQL ----------------------------------------------------------------


def iso(text: str) -> str:
    """SQL: a timestamptz given as text, as Python's isoformat() in UTC."""
    ts = f"({text})::timestamptz AT TIME ZONE 'UTC'"
    return (
        f"to_char({ts}, 'YYYY-MM-DD\"T\"HH24:MI:SS') || CASE WHEN "
        f"date_part('microseconds', {ts})::bigint % 1000000 = 0 THEN '' "
        f"ELSE to_char({ts}, '.US') END || '+00:00'"
    )


# The triggers (realtime.capture.postgres): one per operation,
# statement-level with transition tables, and a row-level one for UPDATEs
# that cannot pair old and new rows by primary key.
PG_TRIGGERS = ("insert", "update", "delete", "update_rows")


def pg_drop_triggers(db_table: str) -> list[str]:
    # "row" is the one row-level trigger of earlier versions.
    return [
        f"DROP TRIGGER IF EXISTS {quote_name(PREFIX + name)} ON {quote_name(db_table)}"
        for name in ("row", *PG_TRIGGERS)
    ]


def postgres_uninstall(db_table: str, *, schema: str) -> list[str]:
    fn = f"{quote_name(schema)}.{quote_name(function_name(db_table))}"
    return [*pg_drop_triggers(db_table), f"DROP FUNCTION IF EXISTS {fn}()"]


# --- SQLite --------------------------------------------------------------------

SQLITE_OPS = {"INSERT": "insert", "UPDATE": "update", "DELETE": "delete"}


def _sqlite_value(column: Column, ref: str) -> str:
    """A column as a JSON value like PostgreSQL's to_jsonb would give it."""
    value = f"{ref}.{quote_name(column.name)}"
    kind = column.kind
    if kind == "bool":
        converted = f"json(CASE WHEN {value} THEN 'true' ELSE 'false' END)"
    elif kind == "json":
        converted = f"json({value})"
    elif kind == "datetime":
        # Django keeps UTC as 'YYYY-MM-DD HH:MM:SS.ffffff'.
        converted = f"replace({value}, ' ', 'T') || '+00:00'"
    elif kind == "uuid":
        converted = (
            f"CASE WHEN length({value}) = 32 THEN lower(substr({value},1,8)||'-'||"
            f"substr({value},9,4)||'-'||substr({value},13,4)||'-'||"
            f"substr({value},17,4)||'-'||substr({value},21)) ELSE {value} END"
        )
    elif kind.startswith("decimal:"):
        converted = f"printf('%.{int(kind.split(':')[1])}f', {value})"
    else:
        return value
    return f"CASE WHEN {value} IS NULL THEN NULL ELSE {converted} END"


def _sqlite_record(spec: Spec, ref: str) -> str:
    pairs = [
        f"{quote_literal(c.name)}, {_sqlite_value(c, ref)}"
        for c in spec.columns
        if c.name not in spec.exclude
    ]
    return "json_object(" + ", ".join(pairs) + ")"


def sqlite_install(spec: Spec) -> list[str]:
    """Statements (re)creating one trigger per operation.

    SQLite has no row-to-JSON: the record is built column by column, so a
    column added later appears once the triggers are generated again.
    """
    columns = json.dumps(
        [
            {"name": c.name, "type": c.pg_type}
            for c in spec.columns
            if c.name not in spec.exclude
        ]
    )
    statements = sqlite_uninstall(spec.db_table)
    for op, suffix in SQLITE_OPS.items():
        ref = "OLD" if op == "DELETE" else "NEW"
        record = "NULL" if op == "DELETE" else _sqlite_record(spec, "NEW")
        old = "NULL" if op == "INSERT" else _sqlite_record(spec, "OLD")
        condition = tenant_condition(spec, ref)
        statements.append(
            f"CREATE TRIGGER {quote_name(function_name(spec.db_table) + '_' + suffix)}"
            f" AFTER {op} ON {quote_name(spec.db_table)} FOR EACH ROW BEGIN "
            'INSERT INTO realtime_liveupdate (tenant_id, "table", type, record, '
            "old_record, columns, commit_timestamp) "
            f"SELECT t.id, {quote_literal(spec.table)}, '{op}', {record}, {old}, "
            f"{quote_literal(columns)}, strftime('%Y-%m-%d %H:%M:%f', 'now') "
            f"FROM realtime_tenant t WHERE {condition}; "
            "UPDATE realtime_trackedtable SET skipped = skipped + 1, "
            "last_skipped_at = strftime('%Y-%m-%d %H:%M:%f', 'now') "
            f"WHERE db_table = {quote_literal(spec.db_table)} AND NOT EXISTS "
            f"(SELECT 1 FROM realtime_tenant t WHERE {condition}); END"
        )
    return statements


def sqlite_uninstall(db_table: str) -> list[str]:
    return [
        f"DROP TRIGGER IF EXISTS {quote_name(function_name(db_table) + '_' + s)}"
        for s in SQLITE_OPS.values()
    ]


def sqlite_column(name: str, declared: str) -> Column:
    """A column of a table Herald does not model, by its declared type."""
    t = declared.upper()
    if "BOOL" in t:
        return Column(name, "bool", "bool")
    if "JSON" in t:
        return Column(name, "jsonb", "json")
    if "INT" in t:
        return Column(name, "int8")
    if any(x in t for x in ("REAL", "FLOA", "DOUB")):
        return Column(name, "float8")
    if "DATETIME" in t or "TIMESTAMP" in t:
        return Column(name, "timestamptz")
    if any(x in t for x in ("DEC", "NUMERIC")):
        return Column(name, "numeric")
    return Column(name, "text")
