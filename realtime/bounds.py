"""Bounds on what a client controls, checked before any work that grows with it.

The publishable key is public, so every frame, name and value may be hostile.
Each bound here caps the cost of one input; the consumer and the REST views
check them first and refuse with a reason, never with a crash.
"""

from __future__ import annotations

import re
from typing import Any

# Nesting of user data (a record, a broadcast payload, a presence meta, a claim).
# orjson refuses to encode past 254 levels; real payloads stay far below this.
MAX_JSON_DEPTH = 32
# A frame's payload may wrap user data in two more levels of its own
# (`payload.payload` of a broadcast, `config.postgres_changes[i]` of a join).
MAX_FRAME_DEPTH = MAX_JSON_DEPTH + 3
# A topic (after `realtime:`): the subscription row's column holds 255.
MAX_TOPIC_LENGTH = 255
# postgres_changes bindings in one join. Matching, the join reply and the
# subscription row all grow with this.
MAX_BINDINGS_PER_JOIN = 100
# A binding's filter text: room for `in.(...)` with 100 uuids.
MAX_FILTER_LENGTH = 4096
# Event names, presence keys and other short names a client chooses.
MAX_NAME_LENGTH = 255


def too_deep(value: object, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether JSON-like `value` nests lists and dicts more than `limit` deep.

    Iterative, and it stops at the first branch past the limit: the cost is
    bounded by the size of the value, never by its depth.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def has_control_characters(text: str) -> bool:
    """NUL and the other C0 controls (and DEL), which no name should hold.

    PostgreSQL refuses NUL in text outright, so a topic holding one would fail
    the subscription row's insert.
    """
    return _CONTROL.search(text) is not None


_CONTROL = re.compile("[\x00-\x1f\x7f]")


def storable(value: Any) -> Any:
    """`value` with NUL taken out of every string, as PostgreSQL stores text
    and jsonb: it refuses NUL in both, so a client's NUL in a name, a token
    claim or a filter would fail the write of a whole row."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    return value
