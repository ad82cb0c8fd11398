"""Subscription rows: opened when a socket joins a channel, closed when it leaves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from realtime.auth import Principal
from subscriptions.models import Subscription


def subscription_open(
    *,
    principal: Principal,
    topic: str,
    bindings: Sequence[dict[str, Any]],
    private: bool,
    node: str,
    connection: str,
    join_ref: str | None,
) -> int:
    """Record a joined channel; returns its id."""
    return Subscription.objects.create(
        tenant=principal.tenant,
        topic=topic[:255],
        role=principal.role[:63],
        sub=principal.sub[:255],
        bindings=list(bindings),
        private=private,
        node=node,
        connection=connection,
        join_ref=(join_ref or "")[:64],
    ).pk


def subscriptions_close(*, delivered: Mapping[int, int]) -> None:
    """Close subscriptions (id → messages delivered since they were opened)."""
    now = timezone.now()
    with transaction.atomic():
        for pk, count in delivered.items():
            Subscription.objects.filter(pk=pk, state=Subscription.State.ACTIVE).update(
                state=Subscription.State.CLOSED,
                closed_at=now,
                last_seen_at=now,
                delivered_count=F("delivered_count") + count,
                last_delivered_at=now if count else F("last_delivered_at"),
            )
