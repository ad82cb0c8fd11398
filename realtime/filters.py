"""Parse a postgres_changes binding's `filter` string into a predicate on a record.

The grammar is Supabase Realtime's, with PostgREST's operators:
`<column>=[not.]<op>.<value>`, several conditions ANDed with commas; ops `eq`,
`neq`, `lt`, `lte`, `gt`, `gte`, `in.(a,b)`, `like` and `ilike` (`%` or `*` for any
run, `_` for one character), `is.null|true|false|unknown`, `match` and `imatch`
(regular expressions, run by RE2), `isdistinct`. Postgres casts the value to the
column's type;
Herald only has JSON records, so the value is read according to the type of the
record's value instead (docs/protocol.md §6). Pure functions, no Django, so they
are tested without a database.
"""

from __future__ import annotations

import functools
import json
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import re2

__all__ = ["MATCH_ALL", "Condition", "Filter", "FilterError", "compile_filter"]

MAX_IN_VALUES = 100
# Filters up to this long are compiled once and shared (4,096 of them at most).
CACHED_FILTER_LENGTH = 256

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "neq": operator.ne,
    "lt": operator.lt,
    "lte": operator.le,
    "gt": operator.gt,
    "gte": operator.ge,
}
_PATTERNS = frozenset({"like", "ilike", "match", "imatch"})
_OPS = frozenset({*_COMPARE, *_PATTERNS, "in", "is", "isdistinct"})
# IS and IS DISTINCT FROM are never NULL, so `not.` negates them plainly; every
# other operator is NULL on a NULL value, and NOT NULL is still no match.
_NULL_SAFE = frozenset({"is", "isdistinct"})
_IS_VALUES: dict[str, Any] = {
    "null": None,
    "unknown": None,
    "true": True,
    "false": False,
}
# Regular expressions come from clients: RE2 matches in time linear in the
# text (no backtracking), and this caps the memory of one compiled pattern.
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.max_mem = 1 << 20
_RE2_OPTIONS.log_errors = False
_RE2_OPTIONS.dot_nl = True

# fullmatch, never `$`: `$` would let "site_id\n" through.
_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# JSON/Postgres number syntax only; Python's int()/float() would also take "1_000",
# "nan" and "inf", none of which a client means as a number.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_BOOLEANS = {"true": True, "t": True, "false": False, "f": False}
# A condition whose value is an `in` list: its commas are not condition separators.
_IN_CONDITION_START = re.compile(r"[^=,]*=(?:not\.)?in\.\(")

Test = Callable[[Any], bool]


class FilterError(ValueError):
    """A filter the server refuses; str() is the text of the `system` error."""

    code = "invalid_filter"


@dataclass(frozen=True, slots=True)
class Condition:
    """One `<column>=<op>.<value>`; `values` holds one value, or the `in` list."""

    column: str
    op: str
    values: tuple[str, ...]
    # Derived from the three fields above, so left out of equality and hashing.
    test: Test = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Filter:
    """A compiled filter; equal filters (same conditions, any order) compare equal."""

    conditions: tuple[Condition, ...]
    columns: frozenset[str] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        columns = frozenset(condition.column for condition in self.conditions)
        object.__setattr__(self, "columns", columns)

    def matches(self, record: Mapping[str, Any] | None) -> bool:
        """True when every condition holds for `record` (always, with none)."""
        if not self.conditions:
            return True
        if record is None:
            return False
        for condition in self.conditions:
            if not condition.test(record.get(condition.column)):
                return False
        return True


MATCH_ALL = Filter(())


# --- Index keys: which record values a condition can match ------------------------
#
# A key is (tag, value) with the tag saying how the test reads a value of that
# type: ("b", True), ("n", 42) (1 and 1.0 are one key, as they compare equal),
# ("s", "42"), ("j", canonical JSON text). A record value matches an `eq` or
# `in` condition only if its key is one of the condition's keys.

IndexKey = tuple[str, Any]


def condition_keys(condition: Condition) -> frozenset[IndexKey] | None:
    """The keys of every value `condition` can match; None if it is not an
    equality (`eq`, `in`), whose matches cannot be listed."""
    if condition.op == "eq":
        raw = condition.values[0]
        keys = _readings(raw)
        json_text = _parse_json_text(raw)
        if json_text is not None and json_text[:1] in ("[", "{"):
            keys.add(("j", json_text))
        return frozenset(keys)
    if condition.op == "in":
        return frozenset(k for raw in condition.values for k in _readings(raw))
    return None


def value_key(value: Any) -> IndexKey | None:
    """The key of a record value, as the tests read it (None for NULL)."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int | float):
        return ("n", value)
    if isinstance(value, str):
        return ("s", value)
    if isinstance(value, dict | list):
        return ("j", _json_text(value))
    return None


def _readings(raw: str) -> set[IndexKey]:
    keys: set[IndexKey] = {("s", raw)}
    number, boolean = _parse_number(raw), _parse_boolean(raw)
    if number is not None:
        keys.add(("n", number))
    if boolean is not None:
        keys.add(("b", boolean))
    return keys


def compile_filter(text: str | None) -> Filter:
    """Compile a binding's filter; raise FilterError with the client-facing text."""
    if not text:
        return MATCH_ALL
    if len(text) > CACHED_FILTER_LENGTH:
        return _compile(text)  # a rare long filter must not pin memory
    return _compile_cached(text)


# Thousands of sockets join with the same few filters; compiling each once also makes
# them share one Filter object. Errors are raised, so they are never cached.
@functools.lru_cache(maxsize=4096)
def _compile_cached(text: str) -> Filter:
    return _compile(text)


def _compile(text: str) -> Filter:
    conditions = {_parse_condition(part) for part in _split_conditions(text)}
    # AND is commutative, so a sorted, de-duplicated tuple is the canonical form.
    ordered = sorted(conditions, key=lambda c: (c.column, c.op, c.values))
    return Filter(tuple(ordered))


def _split_conditions(text: str) -> list[str]:
    parts = []
    start = 0
    while True:
        end = _condition_end(text, start)
        parts.append(text[start:end])
        if end >= len(text):
            return parts
        start = end + 1


def _condition_end(text: str, start: int) -> int:
    search_from = start
    if _IN_CONDITION_START.match(text, start):
        close = text.find(")", start)
        if close != -1:
            search_from = close
    comma = text.find(",", search_from)
    return len(text) if comma == -1 else comma


def _parse_condition(text: str) -> Condition:
    column, has_equals, rest = text.partition("=")
    if not has_equals:
        raise _parse_error([text])
    negated = rest.startswith("not.")
    op, has_dot, value = rest.removeprefix("not.").partition(".")
    if not has_dot or op not in _OPS or not _COLUMN.fullmatch(column):
        raise _parse_error([column, rest])
    values, test = _operator(op, value)
    if negated:
        return Condition(column, f"not.{op}", values, _negate(test, op))
    return Condition(column, op, values, test)


def _operator(op: str, value: str) -> tuple[tuple[str, ...], Test]:
    """The values of one operator's condition and its test."""
    if op == "in":
        values = _parse_in_values(value)
        return values, _in_test(values)
    if op == "is":
        return (value,), _is_test(value)
    if op == "isdistinct":
        same = _compare_test("eq", value)
        return (value,), lambda v: v is None or not same(v)
    if op in _PATTERNS:
        return (value,), _pattern_test(op, value)
    return (value,), _compare_test(op, value)


def _negate(test: Test, op: str) -> Test:
    if op in _NULL_SAFE:
        return lambda value: not test(value)
    return lambda value: value is not None and not test(value)


def _is_test(raw: str) -> Test:
    if raw.lower() not in _IS_VALUES:
        raise FilterError(
            "Error parsing `filter` params: `is` takes null, true, false or unknown"
        )
    expected = _IS_VALUES[raw.lower()]
    if expected is None:
        return lambda value: value is None
    return lambda value: value is expected


def _pattern_test(op: str, raw: str) -> Test:
    """LIKE and ILIKE (`%` or `*` for any run, `_` for one character, `\\`
    escapes), or a POSIX-style regular expression for match and imatch;
    strings only, as in Postgres."""
    if op in ("like", "ilike"):
        pattern, search = _like_regex(raw), "fullmatch"
    else:
        pattern, search = raw, "search"
    if op in ("ilike", "imatch"):
        pattern = "(?i)" + pattern
    try:
        compiled = re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        message = exc.args[0].decode(errors="replace") if exc.args else ""
        raise FilterError(
            f"Error parsing `filter` params: invalid regular expression: {message}"
        ) from exc
    find = getattr(compiled, search)
    return lambda value: isinstance(value, str) and find(value) is not None


def _like_regex(raw: str) -> str:
    parts, escaped = [], False
    for char in raw:
        if escaped:
            parts.append(re2.escape(char))
            escaped = False
        elif char == "\\":
            escaped = True
        elif char in "%*":
            parts.append(".*")
        elif char == "_":
            parts.append(".")
        else:
            parts.append(re2.escape(char))
    return "".join(parts)


def _parse_error(parts: list[str]) -> FilterError:
    # Realtime renders the split parts with Elixir's inspect: ["foo", "hey"].
    rendered = json.dumps(parts, ensure_ascii=False)
    return FilterError(f"Error parsing `filter` params: {rendered}")


def _parse_in_values(value: str) -> tuple[str, ...]:
    if len(value) < 2 or value[0] != "(" or value[-1] != ")":
        raise FilterError(
            "Error parsing `filter` params: "
            "`in` filter value must be wrapped by parentheses"
        )
    inner = value[1:-1]
    # Realtime rewrites (a,b) to the array literal {a,b}; Postgres trims unquoted
    # elements and drops the double quotes around quoted ones.
    items = [_unquote(item.strip()) for item in inner.split(",")] if inner else []
    if len(items) > MAX_IN_VALUES:
        raise FilterError("too many values for `in` filter. Maximum 100")
    return tuple(sorted(set(items)))


def _unquote(item: str) -> str:
    if len(item) >= 2 and item[0] == item[-1] == '"':
        return item[1:-1]
    return item


def _compare_test(op: str, raw: str) -> Test:
    """Build the test for one scalar op, with the value pre-read in every type."""
    compare = _COMPARE[op]
    number = _parse_number(raw)
    boolean = _parse_boolean(raw)
    # jsonb has equality but no useful order, so containers only support eq/neq.
    json_text = _parse_json_text(raw) if op in ("eq", "neq") else None

    def test(value: Any) -> bool:
        # bool before int: True is an int in Python, but a bool column in Postgres.
        if isinstance(value, bool):
            return boolean is not None and compare(value, boolean)
        if isinstance(value, int | float):
            return number is not None and compare(value, number)
        if isinstance(value, str):
            return compare(value, raw)
        if isinstance(value, dict | list):
            return json_text is not None and compare(_json_text(value), json_text)
        # None (SQL NULL) and anything else never match, not even for neq.
        return False

    return test


def _in_test(raws: tuple[str, ...]) -> Test:
    """Build the test for `in`: set membership in each type's reading of the list."""
    strings = frozenset(raws)
    numbers = frozenset(n for n in map(_parse_number, raws) if n is not None)
    booleans = frozenset(b for b in map(_parse_boolean, raws) if b is not None)

    def test(value: Any) -> bool:
        if isinstance(value, bool):
            return value in booleans
        if isinstance(value, int | float):
            # 1 and 1.0 hash alike, so membership is a numeric comparison.
            return value in numbers
        if isinstance(value, str):
            return value in strings
        return False

    return test


def _parse_number(raw: str) -> int | float | None:
    if not _NUMBER.fullmatch(raw):
        return None
    try:
        if "." in raw or "e" in raw or "E" in raw:
            return float(raw)
        return int(raw)
    except ValueError:  # more digits than Python converts (int_max_str_digits)
        return None


def _parse_boolean(raw: str) -> bool | None:
    return _BOOLEANS.get(raw.lower())


def _parse_json_text(raw: str) -> str | None:
    try:
        return _json_text(json.loads(raw))
    except (ValueError, RecursionError):
        return None


def _json_text(value: Any) -> str:
    # Canonical text, so key order and spacing do not matter (jsonb equality).
    # default=str: a record that is not pure JSON must not crash delivery.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
