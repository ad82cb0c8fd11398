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

SERVICE_ROLE = "service_role"
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
    regex = [re.escape(literals[0])]
    for hole, literal in zip(holes, literals[1:], strict=True):
        if hole is None:
            regex.append(".*")
        else:
            value = _claim_text(claims.get(hole))
            if value is None or value == "":
                return False
            regex.append(re.escape(value))
        regex.append(re.escape(literal))
    return re.fullmatch("".join(regex), topic, flags=re.DOTALL) is not None


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
