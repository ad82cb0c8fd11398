"""Row policies: which rows of a table a role may see, given its token's claims.

A policy is a list of rules `(column, claim)`; a row is visible when some policy has
all its rules holding (`row[column] == claims[claim]`). A membership rule
`(column, claim, True)` holds when `row[column]` is one of the values of the list
claim `claims[claim]`. See README, "Listening" (row policies), and
docs/architecture.md §6. Pure functions, no Django, so they are tested without a
database. A binding's filter is checked separately and ANDed by the caller, so a
filter can only narrow what this allows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from realtime.roles import SERVICE_ROLE

__all__ = [
    "SERVICE_ROLE",
    "claims_key",
    "filter_admitted",
    "old_row_visible",
    "redacted_old_record",
    "relevant_claims",
    "row_visible",
]


# (column, claim), or (column, claim, True) for "row[column] in claims[claim]".
Rule = tuple[str, str] | tuple[str, str, bool]
MAX_LIST_CLAIM = 1000  # values of a list claim considered; the rest are ignored


def row_visible(
    *,
    role: str,
    policies: Sequence[Sequence[Rule]],
    row: Mapping[str, Any] | None,
    claims: Mapping[str, Any],
) -> bool:
    """Whether `role` with `claims` may see `row`; no policies means invisible."""
    if role == SERVICE_ROLE:
        return True
    return any(_policy_holds(policy, row, claims) for policy in policies)


def old_row_visible(
    *,
    role: str,
    policies: Sequence[Sequence[Rule]],
    change_type: str,
    old_record: Mapping[str, Any] | None,
    claims: Mapping[str, Any],
) -> bool:
    """Whether a subscriber shown a change may see its `old_record` whole too.

    The change itself was judged on one row: the new one, or for a DELETE the
    old one. Only an UPDATE carries a second row, which may be another site's
    (a row moved from site 99 to 42): a site-42 reader gets the change, but the
    old row only if the policies let it see that row as well. Otherwise it gets
    `redacted_old_record(old_record)` in its place.
    """
    if change_type != "UPDATE" or old_record is None:
        return True
    return row_visible(role=role, policies=policies, row=old_record, claims=claims)


def redacted_old_record(old_record: Mapping[str, Any] | None) -> dict[str, Any]:
    """What is sent of an old row the reader may not see: `{"id": <id>}`, or `{}`.

    It is what Supabase sends when the old row's columns are not available to
    the subscriber (no REPLICA IDENTITY FULL, or row level security): the
    primary key columns only. Herald's records are JSON with no schema, so the
    `id` key stands for the primary key; a row without one leaves nothing.
    """
    if old_record is not None and "id" in old_record:
        return {"id": old_record["id"]}
    return {}


def filter_admitted(
    *,
    role: str,
    policies: Sequence[Sequence[Rule]],
    claims: Mapping[str, Any],
    equalities: Mapping[str, Any],
) -> bool:
    """Whether a row with these column values could be visible to `role`.

    For subscribing: a filter `column=eq.value` whose value no policy lets the
    principal see (another supplier's id, say) is refused up front. Columns the
    filter leaves open are judged later, row by row, by `row_visible`.
    """
    if role == SERVICE_ROLE:
        return True
    return any(_policy_admits(policy, claims, equalities) for policy in policies)


def relevant_claims(policies: Sequence[Sequence[Rule]]) -> frozenset[str]:
    """The claim names `policies` read: sockets equal on these see the same rows."""
    return frozenset(rule[1] for policy in policies for rule in policy)


def claims_key(
    claim_names: Iterable[str], claims: Mapping[str, Any]
) -> tuple[str | frozenset[str] | None, ...]:
    """A hashable key of what policies read of `claims`, for memoising.

    `claim_names` is `relevant_claims(policies)`, the same collection (so the
    same order) for every principal compared. Principals with equal keys are
    judged alike: a scalar claim stands as its canonical text, a list claim as
    the set of its canonical values, anything else as None (it matches nothing
    either way).
    """
    return tuple(
        _canonical_set(value) if isinstance(value, list) else _canonical(value)
        for value in (claims.get(claim) for claim in claim_names)
    )


def _policy_holds(
    policy: Sequence[Rule], row: Mapping[str, Any] | None, claims: Mapping[str, Any]
) -> bool:
    # A policy without rules grants every row, even a change that carries none.
    if not policy:
        return True
    if row is None:
        return False
    for rule in policy:
        if _is_membership(rule):
            if not _member(row.get(rule[0]), claims.get(rule[1])):
                return False
            continue
        expected = _canonical(claims.get(rule[1]))
        if expected is None or _canonical(row.get(rule[0])) != expected:
            return False
    return True


def _policy_admits(
    policy: Sequence[Rule], claims: Mapping[str, Any], equalities: Mapping[str, Any]
) -> bool:
    for rule in policy:
        column, claim = rule[0], rule[1]
        if _is_membership(rule):
            members = _canonical_set(claims.get(claim))
            if not members:
                return False  # an absent or empty list claim admits nothing
            if column in equalities and _canonical(equalities[column]) not in members:
                return False
            continue
        expected = _canonical(claims.get(claim))
        if expected is None:
            return False  # a policy on a claim the principal lacks never holds
        if column in equalities and _canonical(equalities[column]) != expected:
            return False
    return True


def _is_membership(rule: Rule) -> bool:
    return len(rule) > 2 and rule[2] is True


def _member(value: Any, claim: Any) -> bool:
    """Whether a row's value is one of a list claim's (canonical) values."""
    members = _canonical_set(claim)
    canonical = _canonical(value)
    return members is not None and canonical is not None and canonical in members


def _canonical_set(claim: Any) -> frozenset[str] | None:
    """The canonical values of a list claim; None when the claim is not a list.

    Only a JSON array counts: a scalar where a list is expected is a
    misconfigured token, not a one-element list. Values that never match
    (null, containers, non-finite floats) are left out.
    """
    if not isinstance(claim, list):
        return None
    values = (_canonical(item) for item in claim[:MAX_LIST_CLAIM])
    return frozenset(v for v in values if v is not None)


def _canonical(value: Any) -> str | None:
    """A comparable text for a scalar, or None for what must never match.

    JWT claims are often strings ("42") where the row holds a number (42), so both
    sides are compared as text. Null, containers and non-finite floats never match:
    a claim like {"$ne": 1} or [1, 2] must not be read as "any of these".
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isfinite(value):
        # 42.0 from a JavaScript producer is the same id as 42.
        return str(int(value)) if value.is_integer() else repr(value)
    return None
