"""Reads: plain data for the delivery path and the APIs."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from django.db import connection

from realtime.channel_policy import ChannelRule
from realtime.errors import NotFound
from realtime.models import ApiKey, ChannelPolicy, RowPolicy, Tenant, TrackedTable
from realtime.row_policy import Rule

Rules = list[list[Rule]]


def row_policy_rules(*, tenant_id: int, table: str) -> dict[str, Rules]:
    """role → its policies for the table, each a list of rules (row_policy.Rule)."""
    by_role: dict[str, Rules] = defaultdict(list)
    rows = RowPolicy.objects.filter(tenant_id=tenant_id, table=table).values_list(
        "role", "rules"
    )
    for role, rules in rows:
        by_role[role].append([_rule(r) for r in rules])
    return dict(by_role)


def _rule(rule: dict[str, Any]) -> Rule:
    if rule.get("any") is True:
        return (rule["column"], rule["claim"], True)
    return (rule["column"], rule["claim"])


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


def tracked_columns(*, tables: Iterable[str]) -> dict[str, frozenset[str] | None]:
    """table → the columns its captured changes carry, None for a table that
    is not tracked (published over REST: no schema is known)."""
    found: dict[str, frozenset[str] | None] = dict.fromkeys(tables)
    rows = TrackedTable.objects.filter(table__in=list(found)).values_list(
        "table", "db_table", "exclude"
    )
    for table, db_table, exclude in rows:
        with connection.cursor() as cursor:
            description = connection.introspection.get_table_description(
                cursor, db_table
            )
        names = {c.name for c in description} - set(exclude or [])
        found[table] = (found[table] or frozenset()) | names
    return found


def tenant_by_slug(*, slug: str) -> Tenant:
    """The tenant, or NotFound naming the slug asked for."""
    tenant = Tenant.objects.filter(slug=slug).first() if len(slug) <= 63 else None
    if tenant is None:
        raise NotFound(f"No tenant with slug {slug[:63]!r}")
    return tenant


def tenants_page(*, after: str | None, limit: int) -> list[Tenant]:
    """Tenants by slug, those after `after`, at most `limit`."""
    rows = Tenant.objects.order_by("slug")
    if after:
        rows = rows.filter(slug__gt=after)
    return list(rows[:limit])


def tenant_key(*, tenant: Tenant, key_id: int) -> ApiKey:
    """One of the tenant's keys (revoked or not), or NotFound."""
    in_range = 0 < key_id < 2**63  # a bigint: a longer number is no key at all
    key = ApiKey.objects.filter(tenant=tenant, pk=key_id).first() if in_range else None
    if key is None:
        raise NotFound(f"The tenant has no key {key_id}")
    return key
