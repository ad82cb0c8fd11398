"""The SQL of capture triggers, for PostgreSQL (PL/pgSQL) and SQLite.

Pure functions: a `Spec` in, statements out. Names are plain identifiers
(realtime.validators) checked before they get here, and quoted anyway.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

# The advisory lock namespace that orders a tenant's cursors; the same as
# realtime/services/changes.py takes, so trigger rows and Herald's own rows
# of one tenant commit in cursor order together.
CURSOR_LOCK_NAMESPACE = 7_211_101
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


def _tenant_condition(spec: Spec, ref: str) -> str:
    """SQL true for the tenant row the changed row belongs to."""
    if spec.tenant_kind == "fixed":
        return f"t.slug = {quote_literal(spec.tenant_value)}"
    column = f"{ref}.{quote_name(spec.tenant_value)}"
    if spec.tenant_kind == "id":
        return f"t.id = {column}"
    return f"t.slug = {column}"


# --- PostgreSQL ----------------------------------------------------------------


def _iso(text: str) -> str:
    """SQL: a timestamptz given as text, as Python's isoformat() in UTC."""
    ts = f"({text})::timestamptz AT TIME ZONE 'UTC'"
    return (
        f"to_char({ts}, 'YYYY-MM-DD\"T\"HH24:MI:SS') || CASE WHEN "
        f"date_part('microseconds', {ts})::bigint % 1000000 = 0 THEN '' "
        f"ELSE to_char({ts}, '.US') END || '+00:00'"
    )


# The triggers: one per operation, statement-level with transition tables
# (one INSERT ... SELECT per statement, not one per row), and a row-level
# path for the UPDATEs that cannot pair old and new rows by primary key.
PG_TRIGGERS = ("insert", "update", "delete", "update_rows")


def _record_sql() -> str:
    """PL/pgSQL: the record's SQL for alias n and o, and `columns`, from the
    catalog (once per statement, so a column added later needs no step).

    numeric travels as text ("9.50"), as Herald's Python path sends it (a
    JSON number would lose its scale in most clients); timestamptz in UTC
    with six digits of microseconds or none, as Python's isoformat() (to_jsonb
    uses the session's time zone and drops trailing zeros). Other values are
    what to_jsonb(row) gives: jsonb_build_object converts each the same way.
    jsonb_build_object takes at most 100 arguments: 50 columns a call.
    """
    stamp = quote_literal(_iso("{col}"))
    return f"""
    WITH c AS (
        SELECT a.attnum AS num, a.attname::text AS name, ty.typname::text AS type,
               (row_number() OVER (ORDER BY a.attnum) - 1) / 50 AS chunk
        FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid
        WHERE a.attrelid = TG_RELID AND a.attnum > 0 AND NOT a.attisdropped
          AND NOT (a.attname::text = ANY (excluded))
    ), v AS (
        SELECT c.*, x.alias, CASE c.type
            WHEN 'numeric' THEN format('%s.%I::text', x.alias, c.name)
            WHEN 'timestamptz' THEN replace({stamp}, '{{col}}',
                                            format('%s.%I', x.alias, c.name))
            ELSE format('%s.%I', x.alias, c.name) END AS expr
        FROM c CROSS JOIN (VALUES ('n'), ('o')) x(alias)
    ), parts AS (
        SELECT alias, chunk, 'jsonb_build_object(' || string_agg(
            format('%L, %s', name, expr), ', ' ORDER BY num) || ')' AS part
        FROM v GROUP BY alias, chunk
    )
    SELECT (SELECT coalesce(jsonb_agg(jsonb_build_object('name', name, 'type', type)
                ORDER BY num), '[]'::jsonb) FROM c),
           coalesce((SELECT string_agg(part, ' || ' ORDER BY chunk) FROM parts
                     WHERE alias = 'n'), 'jsonb_build_object()'),
           coalesce((SELECT string_agg(part, ' || ' ORDER BY chunk) FROM parts
                     WHERE alias = 'o'), 'jsonb_build_object()')
    INTO cols, rec_n, rec_o;"""


def _pg_body(spec: Spec, herald: str) -> str:
    """The trigger function: rows in, one change-log INSERT ... SELECT out.

    Statement level: the rows are the transition tables, `n` (new) and `o`
    (old), in the order the statement wrote them; an UPDATE pairs them by
    the primary key (TG_ARGV[0]). Row level (an UPDATE naming the primary
    key, or a table without one): the rows are OLD and NEW, as $2 and $3.
    """
    excluded = "ARRAY[" + ",".join(quote_literal(c) for c in spec.exclude) + "]::text[]"
    return f"""
DECLARE
    excluded text[] := {excluded};
    flag text := 'herald.capture_rows_' || TG_RELID::text;
    cols jsonb;
    rec_n text;
    rec_o text;
    src text;
    tenant_on text;
    ordered text := '';
    total bigint := 1;
    written bigint;
BEGIN
    IF TG_LEVEL = 'ROW' AND TG_ARGV[0] <> '' THEN
        -- An UPDATE naming the primary key cannot pair rows by it: recorded
        -- here row by row, and the statement trigger that follows skips it.
        PERFORM set_config(flag, 'rows', true);
    ELSIF TG_OP = 'UPDATE' AND current_setting(flag, true) = 'rows' THEN
        PERFORM set_config(flag, '', true);
        RETURN NULL;
    END IF;
    {_record_sql()}
    IF TG_LEVEL = 'ROW' THEN
        src := 'FROM (SELECT ($2).*) o, (SELECT ($3).*) n';
    ELSIF TG_OP = 'INSERT' THEN
        src := 'FROM (SELECT *, row_number() OVER () AS "herald ordinal" '
               'FROM new_rows) n';
        ordered := 'ORDER BY n."herald ordinal"';
        SELECT count(*) INTO total FROM new_rows;
    ELSIF TG_OP = 'UPDATE' THEN
        src := format('FROM (SELECT *, row_number() OVER () AS "herald ordinal" '
                      'FROM new_rows) n JOIN old_rows o ON o.%I = n.%I',
                      TG_ARGV[0], TG_ARGV[0]);
        ordered := 'ORDER BY n."herald ordinal"';
        SELECT count(*) INTO total FROM new_rows;
    ELSE
        src := 'FROM (SELECT *, row_number() OVER () AS "herald ordinal" '
               'FROM old_rows) o';
        ordered := 'ORDER BY o."herald ordinal"';
        SELECT count(*) INTO total FROM old_rows;
    END IF;
    tenant_on := format('JOIN {herald}.realtime_tenant t ON %s', CASE TG_OP
        WHEN 'DELETE' THEN {quote_literal(_tenant_condition(spec, "o"))}
        ELSE {quote_literal(_tenant_condition(spec, "n"))} END);

    -- The cursor lock, the one Herald's own publishes take: a tenant's
    -- cursors commit in order, so a reader after cursor N never misses a
    -- later commit. Every tenant the statement writes, in ascending id order
    -- (two statements locking the same tenants never deadlock on them).
    EXECUTE format('SELECT pg_advisory_xact_lock({CURSOR_LOCK_NAMESPACE}, l.id::int4) '
                   'FROM (SELECT DISTINCT t.id %s %s ORDER BY t.id) l',
                   src, tenant_on)
        USING cols, OLD, NEW;

    -- The changes, one per row whose tenant exists, ids in the rows' order.
    EXECUTE format(
        'INSERT INTO {herald}.realtime_liveupdate (tenant_id, "table", type, '
        'record, old_record, columns, commit_timestamp) '
        'SELECT t.id, %L, %L, %s, %s, $1, clock_timestamp() %s %s %s',
        {quote_literal(spec.table)}, TG_OP,
        CASE TG_OP WHEN 'DELETE' THEN 'NULL' ELSE rec_n END,
        CASE TG_OP WHEN 'INSERT' THEN 'NULL' ELSE rec_o END,
        src, tenant_on, ordered)
        USING cols, OLD, NEW;
    GET DIAGNOSTICS written = ROW_COUNT;

    IF written < total THEN
        -- Rows naming no tenant (deleted, or never created): skipped and
        -- counted, never an error for the writer.
        UPDATE {herald}.realtime_trackedtable
        SET skipped = skipped + (total - written), last_skipped_at = clock_timestamp()
        WHERE db_table = TG_TABLE_NAME;
    END IF;
    RETURN NULL;
END
"""


def postgres_install(spec: Spec, *, schema: str, pk: str | None) -> list[str]:
    """Statements (re)creating the trigger function and its triggers.

    `schema` holds Herald's tables: the function names them in full and runs
    with a fixed search_path, as SECURITY INVOKER (the writer's own rights).
    `pk` is the table's single-column primary key, if it has one.
    """
    herald = quote_name(schema)
    fn = f"{herald}.{quote_name(function_name(spec.db_table))}"
    on = quote_name(spec.db_table)
    call = f"EXECUTE FUNCTION {fn}({quote_literal(pk or '')})"

    def trigger(name: str) -> str:
        return f"CREATE TRIGGER {quote_name(PREFIX + name)} AFTER "

    statements = [
        f"CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql "
        f"SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $herald$"
        f"{_pg_body(spec, herald)}$herald$",
        *_pg_drop_triggers(spec.db_table),
        trigger("insert") + f"INSERT ON {on} REFERENCING NEW TABLE AS new_rows "
        f"FOR EACH STATEMENT {call}",
        trigger("delete") + f"DELETE ON {on} REFERENCING OLD TABLE AS old_rows "
        f"FOR EACH STATEMENT {call}",
    ]
    if pk:
        statements += [
            trigger("update") + f"UPDATE ON {on} REFERENCING OLD TABLE AS old_rows "
            f"NEW TABLE AS new_rows FOR EACH STATEMENT {call}",
            trigger("update_rows") + f"UPDATE OF {quote_name(pk)} ON {on} "
            f"FOR EACH ROW {call}",
        ]
    else:
        statements.append(
            trigger("update_rows") + f"UPDATE ON {on} FOR EACH ROW {call}"
        )
    return statements


def _pg_drop_triggers(db_table: str) -> list[str]:
    # "row" is the one row-level trigger of earlier versions.
    return [
        f"DROP TRIGGER IF EXISTS {quote_name(PREFIX + name)} ON {quote_name(db_table)}"
        for name in ("row", *PG_TRIGGERS)
    ]


def postgres_uninstall(db_table: str, *, schema: str) -> list[str]:
    fn = f"{quote_name(schema)}.{quote_name(function_name(db_table))}"
    return [*_pg_drop_triggers(db_table), f"DROP FUNCTION IF EXISTS {fn}()"]


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
        condition = _tenant_condition(spec, ref)
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
