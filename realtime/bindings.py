"""Normalize the `postgres_changes` bindings of a `phx_join` and match changes.

See docs/protocol.md §4 (joining), §5 (delivery), §6 (filters) and §11 (what the
clients require). Pure functions, no Django, so they are tested without a database.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from realtime.bounds import MAX_FILTER_LENGTH, MAX_NAME_LENGTH
from realtime.filters import MATCH_ALL, Filter, FilterError, compile_filter
from realtime.validators import is_identifier

__all__ = [
    "Binding",
    "binding_id",
    "binding_matches",
    "join_reply_entries",
    "parse_bindings",
]

EVENTS = frozenset({"*", "INSERT", "UPDATE", "DELETE"})
# Every change Herald publishes is a row of schema `public`.
HERALD_SCHEMA = "public"
# Supabase's ids are :erlang.phash2(params), in 0..2**27-1; ours skip 0 because
# realtime-js and the Python client ignore a falsy id (docs/protocol.md §11).
_ID_RANGE = 2**27 - 1


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


def _parse_binding(params: dict[str, Any]) -> Binding:
    schema, table = _text(params.get("schema")), _text(params.get("table"))
    error = None
    if schema is None and table is None:
        error = _no_params_message(params)
    elif not (_valid_name(schema) and _valid_name(table)):
        # No change can ever come from such a table, and its name must not
        # reach a stream's group name: refused as a table Realtime cannot find.
        error = _unable_message(params)
    filter_, filter_error = _parse_filter(params.get("filter"))
    return Binding(
        id=binding_id(params),
        event=_event(params),
        schema=schema if schema is not None else HERALD_SCHEMA,
        # Schema only, or Realtime's `table: "*"`, means every table of the schema.
        table=None if table == "*" else table,
        filter=filter_,
        raw=dict(params),
        error=error or filter_error,
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


def _unable_message(params: Mapping[str, Any]) -> str:
    def shown(name: str) -> str:
        value = params.get(name)
        return value[:MAX_NAME_LENGTH] if isinstance(value, str) else "*"

    return (
        "Unable to subscribe to changes with given parameters. Please check "
        "Realtime is enabled for the given connect parameters: [event: "
        f"{_event(params)}, schema: {shown('schema')}, table: {shown('table')}, "
        "filters: []]"
    )


def _canonical_json(value: Any) -> str:
    # default=str: these are rendered for ids and messages and must never raise.
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
