"""Reads: plain data for the delivery path and the APIs."""

from __future__ import annotations

from collections import defaultdict

from realtime.channel_policy import ChannelRule
from realtime.models import ChannelPolicy, RowPolicy

Rules = list[list[tuple[str, str]]]


def row_policy_rules(*, tenant_id: int, table: str) -> dict[str, Rules]:
    """role → its policies for the table, each a list of (column, claim) rules."""
    by_role: dict[str, Rules] = defaultdict(list)
    rows = RowPolicy.objects.filter(tenant_id=tenant_id, table=table).values_list(
        "role", "rules"
    )
    for role, rules in rows:
        by_role[role].append([(r["column"], r["claim"]) for r in rules])
    return dict(by_role)


def channel_rules(*, tenant_id: int) -> list[ChannelRule]:
    """The tenant's channel policies, as pure rules."""
    return [
        ChannelRule(
            pattern=p.pattern,
            role=p.role,
            extension=p.extension,
            read=p.read,
            write=p.write,
        )
        for p in ChannelPolicy.objects.filter(tenant_id=tenant_id)
    ]
