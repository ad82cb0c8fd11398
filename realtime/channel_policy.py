"""Channel policies: who may read or write a private topic. Pure, no Django.

A rule's pattern matches the whole sub-topic: `*` stands for any run of
characters, `{claim}` for the principal's value of that claim (a missing or
non-scalar claim matches nothing), everything else literally.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from realtime.roles import SERVICE_ROLE

Action = Literal["read", "write"]
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}|\*")


@dataclass(frozen=True, slots=True)
class ChannelRule:
    pattern: str
    role: str  # "" = any role
    extension: str  # "*", "broadcast" or "presence"
    read: bool
    write: bool


@lru_cache(maxsize=4096)
def _compile(pattern: str) -> tuple[list[str], list[str | None]]:
    """Literal pieces, and between them a claim name (or None for `*`)."""
    literals, holes, last = [], [], 0
    for match in _PLACEHOLDER.finditer(pattern):
        literals.append(pattern[last : match.start()])
        holes.append(match.group(1))
        last = match.end()
    literals.append(pattern[last:])
    return literals, holes


def _claim_text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    return str(value) if isinstance(value, str | int) else None


def topic_matches(pattern: str, topic: str, claims: Mapping[str, Any]) -> bool:
    literals, holes = _compile(pattern)
    # Claims are filled in, so only `*` is left to match: the pattern is a
    # run of literal pieces separated by wildcards.
    pieces = [literals[0]]
    for hole, literal in zip(holes, literals[1:], strict=True):
        if hole is None:
            pieces.append(literal)
            continue
        value = _claim_text(claims.get(hole))
        if value is None or value == "":
            return False
        pieces[-1] += value + literal
    return glob_matches(pieces, topic)


def glob_matches(pieces: list[str], text: str) -> bool:
    """Whether `text` is pieces[0] + anything + pieces[1] + ... + pieces[-1].

    Greedy and leftmost, never backtracking: the first and last pieces are
    anchored, each middle piece is taken at its first place after the one
    before (a later place could only leave less room). Linear in the text,
    however many wildcards, unlike a regular expression of `.*` runs.
    """
    first, last = pieces[0], pieces[-1]
    if len(pieces) == 1:
        return text == first
    if len(text) < len(first) + len(last):
        return False
    if not (text.startswith(first) and text.endswith(last)):
        return False
    position, end = len(first), len(text) - len(last)
    for piece in pieces[1:-1]:
        found = text.find(piece, position, end)
        if found == -1:
            return False
        position = found + len(piece)
    return True


def channel_allowed(
    rules: Iterable[ChannelRule],
    *,
    role: str,
    claims: Mapping[str, Any],
    topic: str,
    extension: str,
    action: Action,
) -> bool:
    """May this principal `action` the `extension` of private `topic`?"""
    if role == SERVICE_ROLE:
        return True
    return any(
        (not rule.role or rule.role == role)
        and rule.extension in ("*", extension)
        and getattr(rule, action)
        and topic_matches(rule.pattern, topic, claims)
        for rule in rules
    )
