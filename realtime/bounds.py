"""Bounds on client-controlled JSON, checked before any work that grows with it.

orjson parses up to 1024 levels of nesting but serializes at most 254, and
Python's own json recursion stops near 1000: a value nested deeper than
Herald sends would be accepted, then fail on every delivery. Pure functions,
no Django: REST input and WebSocket frames share them.
"""

from __future__ import annotations

from collections.abc import Iterable

# Levels of arrays and objects a client's JSON may nest (`{}` is one level).
MAX_JSON_DEPTH = 32


def too_deep(value: object, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether `value` nests lists and dicts more than `limit` levels deep.

    Iterative (no recursion limit to hit) and stops at the first container
    past the limit.
    """
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Iterable[object] = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        depth += 1
        if depth > limit:
            return True
        stack.extend(
            (child, depth)
            for child in children
            if isinstance(child, dict | list | tuple)
        )
    return False
