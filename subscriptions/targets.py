"""What a durable subscription asks for, resolved and authorized.

A channel is a name the tenant defined (`ChannelDefinition`) or an inline
binding. Refusals: 400 for what is malformed or unknown, 403 for a filter the
principal may not see, judged by the same row-policy code as the sockets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from realtime import errors
from realtime.auth import Principal
from realtime.filters import FilterError, compile_filter
from realtime.row_policy import filter_admitted
from realtime.selectors import row_policy_rules
from realtime.validators import is_identifier
from subscriptions.models import ChannelDefinition

EVENTS = ("*", "INSERT", "UPDATE", "DELETE")


@dataclass(frozen=True, slots=True)
class ChannelRequest:
    """One entry of `channels`: a channel name, or an inline binding."""

    name: str | None = None
    table: str | None = None
    filter: str = ""
    event: str = "*"


@dataclass(frozen=True, slots=True)
class Target:
    """What a subscription will match, resolved and checked."""

    channel: str
    table: str
    event: str
    filter: str


def _definition_target(
    principal: Principal,
    definition: ChannelDefinition,
    filters: Mapping[str, Any],
) -> Target:
    column = definition.filter_column
    if not column:
        return Target(definition.name, definition.table, definition.event, "")
    value = filters.get(column)
    if value is None:
        raise errors.InvalidInput(
            f"filters.{column}: required by channel {definition.name!r}"
        )
    text = str(value)
    if not text or "," in text or isinstance(value, bool):
        raise errors.InvalidInput(f"filters.{column}: {value!r} is not a valid value")
    # The channel's claim rule is a one-rule row policy on the filter value.
    if definition.claim and not filter_admitted(
        role=principal.role,
        policies=[[(column, definition.claim)]],
        claims=principal.claims,
        equalities={column: value},
    ):
        raise errors.Forbidden(
            f"filters.{column}: {value!r} does not match your "
            f"{definition.claim!r} claim"
        )
    return Target(
        definition.name, definition.table, definition.event, f"{column}=eq.{text}"
    )


def _inline_target(index: int, request: ChannelRequest) -> Target:
    table = request.table or ""
    if not is_identifier(table):
        raise errors.InvalidInput(
            f"channels[{index}].table: {table!r} is not a plain identifier"
        )
    event = request.event.upper()
    if event not in EVENTS:
        raise errors.InvalidInput(
            f"channels[{index}].event: must be one of {', '.join(EVENTS)}"
        )
    return Target(table, table, event, request.filter)


def _policy_check(principal: Principal, index: int, target: Target) -> None:
    """Refuse (403) a subscription through which no row could ever be visible."""
    try:
        compiled = compile_filter(target.filter)
    except FilterError as exc:
        raise errors.InvalidInput(f"channels[{index}].filter: {exc}") from exc
    equalities = {c.column: c.values[0] for c in compiled.conditions if c.op == "eq"}
    policies = row_policy_rules(tenant_id=principal.tenant.pk, table=target.table)
    if not filter_admitted(
        role=principal.role,
        policies=policies.get(principal.role, []),
        claims=principal.claims,
        equalities=equalities,
    ):
        shown = target.filter or "every row"
        raise errors.Forbidden(
            f"channels[{index}]: role {principal.role!r} may not see rows of "
            f"{target.table!r} matching {shown}"
        )


def subscription_targets(
    *,
    principal: Principal,
    channels: Sequence[ChannelRequest],
    filters: Mapping[str, Any],
) -> list[Target]:
    """Resolve and check the requested channels: 400 unknown/invalid, 403 not yours."""
    names = {c.name for c in channels if c.name is not None}
    definitions = {
        d.name: d
        for d in ChannelDefinition.objects.filter(
            tenant=principal.tenant, name__in=names
        )
    }
    targets = []
    for index, request in enumerate(channels):
        if request.name is None:
            target = _inline_target(index, request)
        elif request.name in definitions:
            target = _definition_target(principal, definitions[request.name], filters)
        else:
            raise errors.InvalidInput(f"channels[{index}]: no channel {request.name!r}")
        _policy_check(principal, index, target)
        targets.append(target)
    return targets
