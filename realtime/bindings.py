"""Normalize the `postgres_changes` bindings of a `phx_join` and match changes.

See docs/protocol.md §4 (joining), §5 (delivery), §6 (filters) and §11 (what the
clients require). Pure functions, no Django, so they are tested without a database.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from realtime.bounds import MAX_FILTER_LENGTH, MAX_NAME_LENGTH
from realtime.filters import (
    MATCH_ALL,
    Condition,
    Filter,
    FilterError,
    compile_filter,
)
from realtime.validators import is_identifier

__all__ = [
    "Binding",
    "binding_id",
    "binding_matches",
    "join_reply_entries",
    "parse_bindings",
    "project_change",
    "select_checked",
    "selected_tables",
]

EVENTS = frozenset({"*", "INSERT", "UPDATE", "DELETE"})
# Every change Herald publishes is a row of schema `public`.
HERALD_SCHEMA = "public"
# Supabase's ids are :erlang.phash2(params), in 0..2**27-1; ours skip 0 because
# realtime-js and the Python client ignore a falsy id (docs/protocol.md §11).
_ID_RANGE = 2**27 - 1
# Names in one binding's `select` (Supabase has no cap: its names must be
# columns of the table). A table published over REST has no declared schema to
# bound them, so the list is: shaping a change costs one lookup per name.
MAX_SELECT_COLUMNS = 100
# Sent with every selection, as Supabase always sends the primary key columns;
# `id` stands for the primary key, as in realtime.row_policy.redacted_old_record.
PRIMARY_KEY = "id"
_SELECT_NOT_A_LIST = (
    "Error parsing `select` params: expected a list of column name strings, "
    'e.g. select: ["col1", "col2"]'
)
_SELECT_ON_WILDCARD = (
    "Column selection is not supported for wildcard subscriptions. Provide an "
    "explicit schema and table name."
)


@dataclass(frozen=True, slots=True)
class Binding:
    """One client binding; `table` None means every table of `schema`.

    `error` is set for a binding the server refused (its system-error text): it is
    still echoed in the join reply, as Supabase does, so the clients' index-by-index
    comparison holds, but it never matches a change.
    """

    id: int
    event: str
    schema: str
    table: str | None
    filter: Filter
    # The client's own dict, echoed verbatim; `id` is derived from it already.
    raw: dict[str, Any] = field(compare=False)
    error: str | None = None
    # The columns to send (`select`), None for all; always with PRIMARY_KEY.
    select: frozenset[str] | None = None


def parse_bindings(items: Any) -> tuple[list[Binding], list[str]]:
    """Parse `config.postgres_changes`; return bindings and system-error messages."""
    if not isinstance(items, list):
        # Realtime logs a malformed payload and joins with what it could parse.
        return [], []
    bindings: list[Binding] = []
    errors: list[str] = []
    for item in items:
        if not isinstance(item, dict):
            # Nothing to echo back for a non-object, so it gets no binding at all.
            errors.append(_no_params_message(item))
            continue
        binding = _parse_binding(item)
        bindings.append(binding)
        if binding.error is not None:
            errors.append(binding.error)
    return bindings, errors


def binding_id(params: Mapping[str, Any]) -> int:
    """A stable id in 1..2**27-1 for the client's params (same params, same id)."""
    # Not hash(): it is salted per process, and every process must agree on ids.
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.blake2b(canonical.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % _ID_RANGE + 1


def join_reply_entries(bindings: Iterable[Binding]) -> list[dict[str, Any]]:
    """The join reply's `postgres_changes`: each client dict, verbatim, plus `id`."""
    return [{**binding.raw, "id": binding.id} for binding in bindings]


def binding_matches(
    b: Binding,
    *,
    table: str,
    change_type: str,
    record: Mapping[str, Any] | None,
    old_record: Mapping[str, Any] | None,
) -> bool:
    """Whether a change (uppercase `change_type`) of `public.<table>` matches `b`."""
    if b.error is not None:
        return False
    if b.event != "*" and b.event != change_type:
        return False
    if b.schema != HERALD_SCHEMA or (b.table is not None and b.table != table):
        return False
    # Herald keeps the whole old row, so DELETEs are filtered on it (Supabase only
    # can with REPLICA IDENTITY FULL).
    row = old_record if change_type == "DELETE" else record
    return b.filter.matches(row)


def project_change(
    data: Mapping[str, Any], select: frozenset[str] | None
) -> dict[str, Any]:
    """A change's `data` with only the selected columns (and the primary key)
    in `record`, `old_record` and `columns`, as Supabase shapes it."""
    if select is None:
        return dict(data)
    keep = select | {PRIMARY_KEY}
    shaped = dict(data)
    for name in ("record", "old_record"):
        row = data.get(name)
        if isinstance(row, Mapping):
            shaped[name] = {k: v for k, v in row.items() if k in keep}
    columns = data.get("columns")
    if isinstance(columns, list):
        shaped["columns"] = [
            c for c in columns if isinstance(c, Mapping) and c.get("name") in keep
        ]
    return shaped


def selected_tables(bindings: Iterable[Binding]) -> set[str]:
    """Tables whose columns the bindings' selections must be checked against."""
    return {
        b.table
        for b in bindings
        if b.select is not None and b.error is None and b.table is not None
    }


def select_checked(
    bindings: Sequence[Binding], columns: Mapping[str, frozenset[str] | None]
) -> tuple[list[Binding], list[str]]:
    """Refuse, as Supabase does, a selection naming a column its table lacks.

    `columns` holds each table's columns, None where Herald knows no schema
    (a table published over REST): there any identifier is taken.
    """
    checked, errors = [], []
    for binding in bindings:
        known = columns.get(binding.table or "")
        if binding.select is not None and binding.error is None and known is not None:
            raw = binding.raw.get("select") or []
            missing = [n for n in raw if isinstance(n, str) and n not in known]
            if missing:
                error = _invalid_select_message(binding.raw, binding.filter, missing[0])
                binding = replace(binding, error=error)
                errors.append(error)
        checked.append(binding)
    return checked, errors


def _parse_binding(params: dict[str, Any]) -> Binding:
    schema, table = _text(params.get("schema")), _text(params.get("table"))
    filter_, filter_error = _parse_filter(params.get("filter"))
    error = None
    if schema is None and table is None:
        error = _no_params_message(params)
    elif not (_valid_name(schema) and _valid_name(table)):
        # No change can ever come from such a table, and its name must not
        # reach a stream's group name: refused as a table Realtime cannot find.
        error = _unable_message(params, filter_)
    select, select_error = _parse_select(params, filter_)
    return Binding(
        id=binding_id(params),
        event=_event(params),
        schema=schema if schema is not None else HERALD_SCHEMA,
        # Schema only, or Realtime's `table: "*"`, means every table of the schema.
        table=None if table == "*" else table,
        filter=filter_,
        raw=dict(params),
        # Supabase reads `select` first, the database checks its names last.
        error=_first_error(select_error, error, filter_error, params, filter_, select),
        select=select,
    )


def _first_error(
    select_error: str | None,
    error: str | None,
    filter_error: str | None,
    params: Mapping[str, Any],
    filter_: Filter,
    select: frozenset[str] | None,
) -> str | None:
    if select_error == _SELECT_NOT_A_LIST:
        return select_error
    if error or filter_error:
        return error or filter_error
    if select is not None and _is_wildcard(params):
        return _SELECT_ON_WILDCARD
    return select_error


def _is_wildcard(params: Mapping[str, Any]) -> bool:
    table, schema = params.get("table"), params.get("schema")
    return not isinstance(table, str) or table == "*" or schema == "*"


def _parse_select(
    params: Mapping[str, Any], filter_: Filter
) -> tuple[frozenset[str] | None, str | None]:
    """The binding's `select`, as Supabase reads it: a string is refused, any
    other non-list ignored, non-string entries dropped, an empty list is all."""
    value = params.get("select")
    if isinstance(value, str):
        return None, _SELECT_NOT_A_LIST
    if not isinstance(value, list):
        return None, None
    if len(value) > MAX_SELECT_COLUMNS:
        return None, (
            "Error parsing `select` params: a select names at most "
            f"{MAX_SELECT_COLUMNS} columns"
        )
    names = [name for name in value if isinstance(name, str)]
    if not names:
        return None, None
    for name in names:
        if not is_identifier(name):
            # No published row has such a column (Supabase: not in pg_attribute).
            return frozenset(names), _invalid_select_message(params, filter_, name)
    return frozenset(names), None


def _invalid_select_message(
    params: Mapping[str, Any], filter_: Filter, name: str
) -> str:
    return (
        "Unable to subscribe to changes with given parameters. An exception happened "
        "so please check your connect parameters: "
        f"[{_params_to_log(params, filter_)}]. Exception: ERROR P0001 "
        f"(raise_exception) invalid column for select {name[:MAX_NAME_LENGTH]}"
    )


def _event(params: Mapping[str, Any]) -> str:
    # `events` is what realtime-py < 2.27.1 sends instead of `event`.
    value = params.get("event", params.get("events"))
    event = value.upper() if isinstance(value, str) else "*"
    # Realtime reads anything it does not know as every event (docs/protocol.md §4).
    return event if event in EVENTS else "*"


def _valid_name(value: str | None) -> bool:
    """A schema or table a change can come from: absent, `*`, or an identifier."""
    return value is None or value == "*" or is_identifier(value)


def _text(value: Any) -> str | None:
    # `table: null` (old Python clients always send it) counts as absent.
    return value if isinstance(value, str) else None


def _parse_filter(value: Any) -> tuple[Filter, str | None]:
    if value is None:
        return MATCH_ALL, None
    if not isinstance(value, str):
        return MATCH_ALL, f"Error parsing `filter` params: {_canonical_json(value)}"
    if len(value) > MAX_FILTER_LENGTH:
        return MATCH_ALL, (
            "Error parsing `filter` params: a filter is at most "
            f"{MAX_FILTER_LENGTH} characters"
        )
    try:
        return compile_filter(value), None
    except FilterError as exc:
        return MATCH_ALL, str(exc)


def _no_params_message(params: Any) -> str:
    return (
        "No subscription params provided. Please provide at least a `schema` or "
        f"`table` to subscribe to: {_canonical_json(params)}"
    )


def _unable_message(params: Mapping[str, Any], filter_: Filter) -> str:
    return (
        "Unable to subscribe to changes with given parameters. Please check "
        "Realtime is enabled for the given connect parameters: "
        f"[{_params_to_log(params, filter_)}]"
    )


def _params_to_log(params: Mapping[str, Any], filter_: Filter) -> str:
    """Supabase's rendering of subscription params in its error texts."""

    def shown(name: str, default: str) -> str:
        value = params.get(name)
        return value[:MAX_NAME_LENGTH] if isinstance(value, str) else default

    filters = ", ".join(
        "{"
        + ", ".join(
            [
                _elixir_string(c.column),
                _elixir_string(c.op.removeprefix("not.")),
                _elixir_string(_filter_value(c)),
                "true" if c.op.startswith("not.") else "false",
            ]
        )
        + "}"
        for c in filter_.conditions
    )
    value = params.get("select")
    names = [n for n in value if isinstance(n, str)] if isinstance(value, list) else []
    select = (
        "[" + ", ".join(_elixir_string(n[:MAX_NAME_LENGTH]) for n in names) + "]"
        if names
        else "nil"
    )
    return (
        f"event: {_event(params)}, schema: {shown('schema', 'public')}, "
        f"table: {shown('table', '*')}, "
        f"filters: [{filters}], select: {select}"
    )


def _filter_value(condition: Condition) -> str:
    # Supabase stores an `in` list as a Postgres array literal.
    if condition.op.removeprefix("not.") == "in":
        return "{" + ",".join(condition.values) + "}"
    return condition.values[0]


def _elixir_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _canonical_json(value: Any) -> str:
    # default=str: these are rendered for ids and messages and must never raise.
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
