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


def postgres_install(spec: Spec, *, schema: str) -> list[str]:
    """Statements (re)creating the trigger function and the row trigger.

    `schema` holds Herald's tables: the function names them in full and runs
    with a fixed search_path, as SECURITY INVOKER (the writer's own rights).
    """
    herald = quote_name(schema)
    fn = f"{herald}.{quote_name(function_name(spec.db_table))}"
    excluded = "ARRAY[" + ",".join(quote_literal(c) for c in spec.exclude) + "]::text[]"
    table = quote_literal(spec.table)
    body = f"""
DECLARE
    tenant bigint;
    rec jsonb;
    old_rec jsonb;
    cols jsonb;
    numerics text[];
    stamps text[];
    col text;
    keys int;
    cache jsonb;
BEGIN
    IF TG_OP = 'DELETE' THEN
        SELECT t.id INTO tenant FROM {herald}.realtime_tenant t
        WHERE {_tenant_condition(spec, "OLD")};
    ELSE
        SELECT t.id INTO tenant FROM {herald}.realtime_tenant t
        WHERE {_tenant_condition(spec, "NEW")};
    END IF;
    IF tenant IS NULL THEN
        -- No such tenant (deleted, or never created): skipped and counted,
        -- never an error for the writer.
        UPDATE {herald}.realtime_trackedtable
        SET skipped = skipped + 1, last_skipped_at = clock_timestamp()
        WHERE db_table = TG_TABLE_NAME;
        RETURN NULL;
    END IF;
    IF TG_OP <> 'INSERT' THEN old_rec := to_jsonb(OLD) - {excluded}; END IF;
    IF TG_OP <> 'DELETE' THEN rec := to_jsonb(NEW) - {excluded}; END IF;
    -- The columns (and which are numeric or timestamptz) come from the
    -- catalog once per session and table, not per row (a catalog query per
    -- row tripled the cost of a write); a column added or dropped changes
    -- the record's key count, which reads the catalog again.
    keys := (SELECT count(*) FROM jsonb_object_keys(coalesce(rec, old_rec)));
    cache := NULLIF(current_setting('herald.capture_' || TG_RELID::text, true), '')
             ::jsonb;
    IF cache IS NULL OR (cache ->> 'k')::int <> keys THEN
        SELECT coalesce(jsonb_agg(jsonb_build_object('name', a.attname, 'type',
                   ty.typname) ORDER BY a.attnum), '[]'::jsonb),
               array_agg(a.attname::text) FILTER (WHERE ty.typname = 'numeric'),
               array_agg(a.attname::text) FILTER (WHERE ty.typname = 'timestamptz')
        INTO cols, numerics, stamps
        FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid
        WHERE a.attrelid = TG_RELID AND a.attnum > 0 AND NOT a.attisdropped
          AND NOT (a.attname::text = ANY ({excluded}));
        PERFORM set_config('herald.capture_' || TG_RELID::text, jsonb_build_object(
            'k', keys, 'c', cols, 'n', coalesce(to_jsonb(numerics), '[]'::jsonb),
            's', coalesce(to_jsonb(stamps), '[]'::jsonb))::text, false);
    ELSE
        cols := cache -> 'c';
        numerics := ARRAY(SELECT jsonb_array_elements_text(cache -> 'n'));
        stamps := ARRAY(SELECT jsonb_array_elements_text(cache -> 's'));
    END IF;
    -- numeric travels as text ("9.50"), as Herald's Python path sends it:
    -- a JSON number would lose its scale in most clients.
    FOREACH col IN ARRAY coalesce(numerics, ARRAY[]::text[]) LOOP
        IF jsonb_typeof(rec -> col) = 'number' THEN
            rec := jsonb_set(rec, ARRAY[col], to_jsonb(rec ->> col));
        END IF;
        IF jsonb_typeof(old_rec -> col) = 'number' THEN
            old_rec := jsonb_set(old_rec, ARRAY[col], to_jsonb(old_rec ->> col));
        END IF;
    END LOOP;
    -- timestamptz in UTC with all six digits of microseconds (none when
    -- zero), as Herald's Python path writes it: to_jsonb drops trailing zeros
    -- and uses the session's time zone.
    FOREACH col IN ARRAY coalesce(stamps, ARRAY[]::text[]) LOOP
        IF jsonb_typeof(rec -> col) = 'string' THEN
            rec := jsonb_set(rec, ARRAY[col], to_jsonb({_iso("(rec ->> col)")}));
        END IF;
        IF jsonb_typeof(old_rec -> col) = 'string' THEN
            old_rec := jsonb_set(old_rec, ARRAY[col],
                                 to_jsonb({_iso("(old_rec ->> col)")}));
        END IF;
    END LOOP;
    INSERT INTO {herald}.realtime_liveupdate
        (tenant_id, "table", type, record, old_record, columns, commit_timestamp)
    VALUES (tenant, {table}, TG_OP, rec, old_rec, cols, clock_timestamp());
    RETURN NULL;
END
"""
    on = quote_name(spec.db_table)
    trigger = quote_name(PREFIX + "row")
    return [
        f"CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql "
        f"SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $herald${body}"
        "$herald$",
        f"DROP TRIGGER IF EXISTS {trigger} ON {on}",
        f"CREATE TRIGGER {trigger} AFTER INSERT OR UPDATE OR DELETE ON {on} "
        f"FOR EACH ROW EXECUTE FUNCTION {fn}()",
    ]


def postgres_uninstall(db_table: str, *, schema: str) -> list[str]:
    fn = f"{quote_name(schema)}.{quote_name(function_name(db_table))}"
    return [
        f"DROP TRIGGER IF EXISTS {quote_name(PREFIX + 'row')} ON "
        f"{quote_name(db_table)}",
        f"DROP FUNCTION IF EXISTS {fn}()",
    ]


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
