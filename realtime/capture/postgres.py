"""Capture triggers on PostgreSQL: statement-level, one INSERT ... SELECT each.

One trigger per operation, `FOR EACH STATEMENT` with transition tables
(`new_rows`, `old_rows`): a statement writing 20,000 rows runs the function
once and inserts its 20,000 changes in one set-based statement, instead of
20,000 calls each running its own statements.

The record's SQL is written here from the columns the table has at install
(`spec.columns`), as static PL/pgSQL whose plans the session caches. A table
altered since (a column added, dropped or retyped: its `signature` differs)
takes the dynamic path, which works the same SQL out from the catalog once
per statement, so a column added later appears without a step and a column
dropped never breaks a writer. `migrate` and `track_table` bake it again.

An UPDATE pairs old and new rows by the single-column primary key. An UPDATE
naming that key in its SET list (it may move rows between keys), or any
UPDATE of a table without one, is recorded row by row by a row-level trigger.
"""

from __future__ import annotations

import json

from realtime.capture.sql import (
    PREFIX,
    Column,
    Spec,
    function_name,
    iso,
    pg_drop_triggers,
    quote_literal,
    quote_name,
    tenant_condition,
)

# What the trigger compares with the catalog: names and types in order.
SIGNATURE_SQL = (
    "SELECT string_agg(a.attname || ' ' || a.atttypid::text, ',' ORDER BY a.attnum) "
    "FROM pg_catalog.pg_attribute a WHERE a.attrelid = {relation} "
    "AND a.attnum > 0 AND NOT a.attisdropped"
)
ORDINAL = '"herald ordinal"'  # never a plain identifier, so never a column's name


def _value(alias: str, column: Column) -> str:
    """A column as JSON the way Herald's Python path sends it.

    numeric travels as text ("9.50"): a JSON number would lose its scale in
    most clients. timestamptz in UTC with six digits of microseconds or none,
    as Python's isoformat() (to_jsonb uses the session's time zone and drops
    trailing zeros). Everything else as to_jsonb(row) gives it:
    jsonb_build_object converts each value the same way.
    """
    ref = f"{alias}.{quote_name(column.name)}"
    if column.pg_type == "numeric":
        return f"{ref}::text"
    if column.pg_type == "timestamptz":
        return iso(ref)
    return ref


def _record(columns: list[Column], alias: str) -> str:
    """jsonb_build_object takes at most 100 arguments: 50 columns a call."""
    calls = [
        "jsonb_build_object("
        + ", ".join(
            f"{quote_literal(c.name)}, {_value(alias, c)}" for c in columns[i : i + 50]
        )
        + ")"
        for i in range(0, len(columns), 50)
    ]
    return " || ".join(calls) or "jsonb_build_object()"


def _changes_insert(herald: str, spec: Spec, op: str, parts: dict[str, str]) -> str:
    """One change per row whose tenant exists, ids in the rows' order."""
    return (
        f'INSERT INTO {herald}.realtime_liveupdate (tenant_id, "table", type, '
        "record, old_record, columns, commit_timestamp) "
        f"SELECT t.id, {quote_literal(spec.table)}, '{op}', {parts['record']}, "
        f"{parts['old']}, {parts['columns']}, clock_timestamp() "
        f"{parts['source']} {parts['tenant']} {parts['order']}"
    )


def _static_branch(herald: str, spec: Spec, op: str, *, pk: str | None) -> str:
    """PL/pgSQL recording one operation with the columns known at install.

    `pk` None: the row-level path (OLD and NEW, one row, an UPDATE).
    """
    columns = [c for c in spec.columns if c.name not in spec.exclude]
    numbered = f"(SELECT *, row_number() OVER () AS {ORDINAL} FROM %s)"
    alias, old_alias, order = "n", "o", f"ORDER BY n.{ORDINAL}"
    if pk is None:
        alias, old_alias, source, order = "NEW", "OLD", "", ""
    elif op == "UPDATE":
        key = quote_name(pk)
        source = f"FROM {numbered % 'new_rows'} n JOIN old_rows o ON o.{key} = n.{key}"
    else:
        rows, alias = ("old_rows", "o") if op == "DELETE" else ("new_rows", "n")
        source, order = f"FROM {numbered % rows} {alias}", f"ORDER BY {alias}.{ORDINAL}"
    condition = tenant_condition(spec, alias)
    tenant = f"JOIN {herald}.realtime_tenant t ON {condition}"
    if pk is None:
        tenant = f"FROM {herald}.realtime_tenant t WHERE {condition}"
    columns_json = json.dumps([{"name": c.name, "type": c.pg_type} for c in columns])
    parts = {
        "record": "NULL" if op == "DELETE" else _record(columns, alias),
        "old": "NULL" if op == "INSERT" else _record(columns, old_alias),
        "columns": f"{quote_literal(columns_json)}::jsonb",
        "source": source,
        "tenant": tenant,
        "order": order,
    }
    return f"""
        {_changes_insert(herald, spec, op, parts)};
        GET DIAGNOSTICS written = ROW_COUNT;"""


def _template(sql: str, *slots: str) -> str:
    """`sql` as a format() string: each slot becomes %1$s, %2$s, ..."""
    sql = sql.replace("%", "%%")
    for n, slot in enumerate(slots, 1):
        sql = sql.replace(slot, f"%{n}$s")
    return quote_literal(sql)


# The dynamic path's SQL, worked out from the catalog: the same as _value and
# _record write at install, in PL/pgSQL.
_CATALOG = """
        WITH c AS (
            SELECT a.attnum AS num, a.attname::text AS name, ty.typname::text AS type,
                   (row_number() OVER (ORDER BY a.attnum) - 1) / 50 AS chunk
            FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid
            WHERE a.attrelid = TG_RELID AND a.attnum > 0 AND NOT a.attisdropped
              AND NOT (a.attname::text = ANY (excluded))
        ), v AS (
            SELECT c.*, x.alias, CASE c.type
                WHEN 'numeric' THEN format('%s.%I::text', x.alias, c.name)
                WHEN 'timestamptz' THEN replace(STAMP, '{col}',
                                                format('%s.%I', x.alias, c.name))
                ELSE format('%s.%I', x.alias, c.name) END AS expr
            FROM c CROSS JOIN (VALUES ('n'), ('o')) x(alias)
        ), parts AS (
            SELECT alias, chunk, 'jsonb_build_object(' || string_agg(
                format('%L, %s', name, expr), ', ' ORDER BY num) || ')' AS part
            FROM v GROUP BY alias, chunk
        )
        SELECT (SELECT coalesce(jsonb_agg(jsonb_build_object('name', name, 'type',
                    type) ORDER BY num), '[]'::jsonb) FROM c),
               coalesce((SELECT string_agg(part, ' || ' ORDER BY chunk) FROM parts
                         WHERE alias = 'n'), 'jsonb_build_object()'),
               coalesce((SELECT string_agg(part, ' || ' ORDER BY chunk) FROM parts
                         WHERE alias = 'o'), 'jsonb_build_object()')
        INTO cols, rec_n, rec_o;"""


def _dynamic_branch(herald: str, spec: Spec) -> str:
    """PL/pgSQL recording any operation of a table altered since install."""
    slots = ("\x00op", "\x00rec", "\x00old", "\x00src", "\x00tenant", "\x00ord")
    parts = dict(
        zip(("record", "old", "source", "tenant", "order"), slots[1:], strict=True)
    )
    insert = _template(
        _changes_insert(herald, spec, slots[0], {**parts, "columns": "$1"}), *slots
    )
    numbered = f"(SELECT *, row_number() OVER () AS {ORDINAL} FROM %s)"
    update = f"FROM {numbered % 'new_rows'} n JOIN old_rows o ON o.%I = n.%I"
    # The key dropped since install (its row trigger went with it): the rows
    # in the order the statement wrote them, which is how PostgreSQL fills
    # both transition tables.
    by_order = (
        f"FROM {numbered % 'new_rows'} n JOIN {numbered % 'old_rows'} o "
        f"ON o.{ORDINAL} = n.{ORDINAL}"
    )
    return f"""
        {_CATALOG.replace("STAMP", quote_literal(iso("{col}")))}
        IF TG_LEVEL = 'ROW' THEN
            src := 'FROM (SELECT ($2).*) o, (SELECT ($3).*) n';
        ELSIF TG_OP = 'INSERT' THEN
            src := {quote_literal(f"FROM {numbered % 'new_rows'} n")};
        ELSIF TG_OP = 'UPDATE' THEN
            -- The key as it is now (renamed, or dropped, since install).
            SELECT a.attname INTO src FROM pg_index i JOIN pg_attribute a
                ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
            WHERE i.indrelid = TG_RELID AND i.indisprimary AND i.indnatts = 1;
            src := CASE WHEN src IS NULL THEN {quote_literal(by_order)}
                   ELSE format({quote_literal(update)}, src, src) END;
        ELSE
            src := {quote_literal(f"FROM {numbered % 'old_rows'} o")};
        END IF;
        IF TG_LEVEL = 'STATEMENT' THEN
            ordered := format('ORDER BY %s.{ORDINAL}',
                              CASE TG_OP WHEN 'DELETE' THEN 'o' ELSE 'n' END);
        END IF;
        tenant_on := format('JOIN {herald}.realtime_tenant t ON %s', CASE TG_OP
            WHEN 'DELETE' THEN {quote_literal(tenant_condition(spec, "o"))}
            ELSE {quote_literal(tenant_condition(spec, "n"))} END);
        EXECUTE format({insert}, TG_OP,
            CASE TG_OP WHEN 'DELETE' THEN 'NULL' ELSE rec_n END,
            CASE TG_OP WHEN 'INSERT' THEN 'NULL' ELSE rec_o END,
            src, tenant_on, ordered) USING cols, OLD, NEW;
        GET DIAGNOSTICS written = ROW_COUNT;"""


def _body(spec: Spec, herald: str, *, pk: str | None, signature: str) -> str:
    """The trigger function: the path for the table's shape, then skipped rows."""
    excluded = "ARRAY[" + ",".join(quote_literal(c) for c in spec.exclude) + "]::text[]"
    signature_sql = SIGNATURE_SQL.format(relation="TG_RELID")
    update = (
        f"ELSIF TG_OP = 'UPDATE' THEN {_static_branch(herald, spec, 'UPDATE', pk=pk)}"
        if pk
        else ""
    )
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
    shape text;
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
    -- The table's shape now, and how many rows the statement wrote.
    IF TG_LEVEL = 'ROW' THEN
        shape := ({signature_sql});
    ELSIF TG_OP = 'DELETE' THEN
        SELECT ({signature_sql}), count(*) INTO shape, total FROM old_rows;
    ELSE
        SELECT ({signature_sql}), count(*) INTO shape, total FROM new_rows;
    END IF;
    IF shape IS DISTINCT FROM {quote_literal(signature)} THEN
        -- Altered since install: the same SQL, from the catalog.
        {_dynamic_branch(herald, spec)}
    ELSIF TG_LEVEL = 'ROW' THEN {_static_branch(herald, spec, "UPDATE", pk=None)}
    ELSIF TG_OP = 'INSERT' THEN {_static_branch(herald, spec, "INSERT", pk="")}
    {update}
    ELSE {_static_branch(herald, spec, "DELETE", pk="")}
    END IF;
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


def postgres_install(
    spec: Spec, *, schema: str, pk: str | None, signature: str
) -> list[str]:
    """Statements (re)creating the trigger function and its triggers.

    `schema` holds Herald's tables: the function names them in full and runs
    with a fixed search_path, as SECURITY INVOKER (the writer's own rights).
    `spec.columns` and `signature` are the table's columns now; `pk` its
    single-column primary key, if it has one.
    """
    herald = quote_name(schema)
    fn = f"{herald}.{quote_name(function_name(spec.db_table))}"
    on = quote_name(spec.db_table)
    call = f"EXECUTE FUNCTION {fn}({quote_literal(pk or '')})"
    body = _body(spec, herald, pk=pk, signature=signature)

    def trigger(name: str, when: str) -> str:
        return f"CREATE TRIGGER {quote_name(PREFIX + name)} AFTER {when} ON {on} "

    statements = [
        f"CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql "
        "SECURITY INVOKER SET search_path = pg_catalog, pg_temp "
        # The session caches the static statements' plans from their first
        # call, sized for that statement's rows: a nested loop planned for
        # one row pairing an UPDATE's 20,000 old and new rows would take
        # minutes. Hash and merge joins cost about the same for one row.
        "SET enable_nestloop = off "
        f"AS $herald${body}$herald$",
        *pg_drop_triggers(spec.db_table),
        trigger("insert", "INSERT")
        + f"REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT {call}",
        trigger("delete", "DELETE")
        + f"REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT {call}",
    ]
    if not pk:
        return [*statements, trigger("update_rows", "UPDATE") + f"FOR EACH ROW {call}"]
    return [
        *statements,
        trigger("update", "UPDATE") + "REFERENCING OLD TABLE AS old_rows "
        f"NEW TABLE AS new_rows FOR EACH STATEMENT {call}",
        trigger("update_rows", f"UPDATE OF {quote_name(pk)}") + f"FOR EACH ROW {call}",
    ]
