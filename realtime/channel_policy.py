"""Channel policies: who may read or write a private topic. Pure, no Django.

A rule's pattern matches the whole sub-topic: `*` stands for any run of
characters, `{claim}` for the principal's value of that claim, or for any one
of its values when the claim is a list (`site:{site_ids}` with `site_ids:
[1, 2]` matches `site:1` and `site:2`); a missing, empty or non-scalar claim
matches nothing. Everything else matches literally.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from realtime.roles import SERVICE_ROLE

Action = Literal["read", "write"]
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}|\*")
# Ways to fill a pattern's list claims tried at most; past it, no match (a
# token's claims are the client's to choose, within what its issuer signs).
MAX_COMBINATIONS = 10_000
_ANY = object()  # a `*` of the pattern, among the claims' choices


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
    text = str(value) if isinstance(value, str | int) else None
    return text or None


def _claim_values(value: Any) -> list[str] | None:
    """The texts a claim stands for: one, or each of a list's scalars."""
    if isinstance(value, list | tuple):
        texts = [t for v in value if (t := _claim_text(v)) is not None]
        return list(dict.fromkeys(texts)) or None
    text = _claim_text(value)
    return None if text is None else [text]


def topic_matches(pattern: str, topic: str, claims: Mapping[str, Any]) -> bool:
    literals, holes = _compile(pattern)
    choices: list[list[Any]] = []
    for hole in holes:
        if hole is None:
            choices.append([_ANY])
            continue
        values = _claim_values(claims.get(hole))
        if values is None:
            return False
        choices.append(values)
    if math.prod(len(c) for c in choices) > MAX_COMBINATIONS:
        return False
    # Claims are filled in, so only `*` is left to match: the pattern is a
    # run of literal pieces separated by wildcards.
    for picked in itertools.product(*choices):
        pieces = [literals[0]]
        for value, literal in zip(picked, literals[1:], strict=True):
            if value is _ANY:
                pieces.append(literal)
            else:
                pieces[-1] += value + literal
        if glob_matches(pieces, topic):
            return True
    return False


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
