"""Which audiences of a stream a change can reach, without visiting the rest.

Sockets with per-user filters (`site_id=eq.42`) form one audience each, so a
stream of a busy table may hold thousands. Each audience is indexed by the
values its bindings' equality conditions require (`eq`, `in`): a change is
offered only to the audiences indexed under one of its row's values, plus
those whose bindings require no value (scanned for every change). The offer
is a superset: the hub still checks every binding and the row policy of the
audiences offered, so the index only decides what is never looked at.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from realtime.bindings import Binding
from realtime.filters import IndexKey, condition_keys, value_key

ColumnKey = tuple[str, IndexKey]


class Indexed(Protocol):
    bindings: tuple[Binding, ...]


def binding_keys(bindings: Iterable[Binding]) -> frozenset[ColumnKey] | None:
    """The (column, key) pairs one of which a matching row must have; None
    when some binding has no equality condition (any row may match it)."""
    found: set[ColumnKey] = set()
    for binding in bindings:
        keys = _one_condition(binding)
        if keys is None:
            return None
        found |= keys
    return frozenset(found)


def _one_condition(binding: Binding) -> set[ColumnKey] | None:
    # One condition suffices: a match must pass all of them. The first
    # equality in the canonical order is as selective as any for our users
    # (one per binding, mostly).
    for condition in binding.filter.conditions:
        keys = condition_keys(condition)
        if keys is not None:
            return {(condition.column, key) for key in keys}
    return None


class AudienceIndex:
    """A stream's audiences, by the values their filters require."""

    __slots__ = ("_columns", "_keys", "by_value", "scanned")

    def __init__(self) -> None:
        # Audiences any row may match, offered every change.
        self.scanned: dict[int, Any] = {}
        self.by_value: dict[ColumnKey, dict[int, Any]] = {}
        # Indexed column → how many (column, key) entries use it.
        self._columns: dict[str, int] = {}
        self._keys: dict[int, frozenset[ColumnKey]] = {}

    def add(self, audience: Indexed) -> None:
        keys = binding_keys(audience.bindings)
        if keys is None:
            self.scanned[id(audience)] = audience
            return
        self._keys[id(audience)] = keys
        for key in keys:
            self.by_value.setdefault(key, {})[id(audience)] = audience
            self._columns[key[0]] = self._columns.get(key[0], 0) + 1

    def remove(self, audience: Indexed) -> None:
        if self.scanned.pop(id(audience), None) is not None:
            return
        for key in self._keys.pop(id(audience), ()):
            bucket = self.by_value[key]
            del bucket[id(audience)]
            if not bucket:
                del self.by_value[key]
            self._columns[key[0]] -= 1
            if not self._columns[key[0]]:
                del self._columns[key[0]]

    def candidates(self, rows: Iterable[Any]) -> list[Any]:
        """The audiences some change with one of these rows may reach."""
        found = dict(self.scanned)
        for row in rows:
            if not isinstance(row, dict):
                continue
            for column in self._columns:
                key = value_key(row.get(column))
                if key is None:
                    continue
                bucket = self.by_value.get((column, key))
                if bucket:
                    found.update(bucket)
        return list(found.values())
