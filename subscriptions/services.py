"""Subscription rows: opened when a socket joins a channel, closed when it leaves.

Heartbeats and deliveries are not written one by one: the process batches
them (see `subscriptions_flush`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from audit.models import ActivityLog, EventType
from audit.services import activity_entry, activity_record
from realtime.auth import Principal
from realtime.bounds import storable
from subscriptions.models import Subscription


def subscriptions_open(*, items: Sequence[Mapping[str, Any]]) -> list[int]:
    """Record joined channels and their `join` activity, in one transaction;
    their ids, in order.

    The consumers' joins come here in batches (realtime/batched.py): one
    commit for a whole reconnect storm's worth of rows.
    """
    with transaction.atomic():
        rows = Subscription.objects.bulk_create(
            [_subscription_row(**item) for item in items]
        )
        ActivityLog.objects.bulk_create(
            [
                activity_entry(
                    event_type=EventType.JOIN,
                    principal=item["principal"],
                    target=item["topic"],
                    ip=item.get("ip"),
                    details={"subscription": row.pk, "private": item["private"]},
                )
                for item, row in zip(items, rows, strict=True)
            ]
        )
    return [row.pk for row in rows]


def _subscription_row(
    *,
    principal: Principal,
    topic: str,
    bindings: Sequence[dict[str, Any]],
    private: bool,
    node: str,
    connection: str,
    join_ref: str | None,
    ip: str | None = None,
) -> Subscription:
    # Every text here may come from a client (a token's claims, its refs,
    # the bindings it sent): storable() keeps a NUL from failing the row.
    return Subscription(
        tenant=principal.tenant,
        topic=storable(topic[:255]),
        role=storable(principal.role[:63]),
        sub=storable(principal.sub[:255]),
        bindings=storable([binding_summary(b) for b in bindings]),
        tables=storable(
            " ".join(sorted({str(b.get("table") or "*") for b in bindings}))[:255]
        ),
        private=private,
        node=node,
        connection=connection,
        join_ref=storable((join_ref or "")[:64]),
    )


# What a subscription row keeps of a binding, each text cut to this length:
# the row outlives the join, and a client may send anything in a binding.
BINDING_FIELDS = ("id", "event", "schema", "table", "filter")
BINDING_TEXT = 255


def binding_summary(binding: Mapping[str, Any]) -> dict[str, Any]:
    """A binding as operators see it: its id, event, schema, table and filter."""
    summary: dict[str, Any] = {}
    for name in BINDING_FIELDS:
        value = binding.get(name)
        if isinstance(value, str):
            summary[name] = value[:BINDING_TEXT]
        elif isinstance(value, int):
            summary[name] = value
    return summary


def subscriptions_close(*, items: Sequence[Mapping[str, Any]]) -> list[None]:
    """Close subscriptions, adding what each delivered since the last flush,
    with their `leave` activity; one transaction (a disconnect storm)."""
    now = timezone.now()
    left = []
    with transaction.atomic():
        for item in items:
            closed = Subscription.objects.filter(
                pk=item["subscription_id"], state=Subscription.State.ACTIVE
            ).update(
                state=Subscription.State.CLOSED,
                closed_at=now,
                last_seen_at=now,
                delivered_count=F("delivered_count") + item["delivered"],
                last_delivered_at=now if item["delivered"] else F("last_delivered_at"),
            )
            if closed:
                left.append(item)
        topics = dict(
            Subscription.objects.filter(
                pk__in=[item["subscription_id"] for item in left]
            ).values_list("pk", "topic")
        )
        ActivityLog.objects.bulk_create(
            [
                activity_entry(
                    event_type=EventType.LEAVE,
                    principal=item["principal"],
                    target=topics[item["subscription_id"]],
                    ip=item.get("ip"),
                    details={"subscription": item["subscription_id"]},
                )
                for item in left
            ]
        )
    return [None] * len(items)


def subscriptions_flush(*, seen: Collection[int], delivered: Mapping[int, int]) -> None:
    """Mark subscriptions seen and add delivery counts.

    One statement per distinct count: the sockets of a fan-out mostly got the
    same number of frames, so that is a statement or two, cheap to build while
    the event loop waits for the GIL (a CASE of one branch per subscription
    held it long enough to show in the delivery p99).
    """
    now = timezone.now()
    active = Subscription.objects.filter(state=Subscription.State.ACTIVE)
    if seen:
        active.filter(pk__in=seen).update(last_seen_at=now)
    by_count: dict[int, list[int]] = defaultdict(list)
    for pk, count in delivered.items():
        by_count[count].append(pk)
    for count, pks in by_count.items():
        active.filter(pk__in=pks).update(
            delivered_count=F("delivered_count") + count,
            last_delivered_at=now,
            last_seen_at=now,
        )


def subscription_disconnect(*, subscription: Subscription, actor: str = "") -> None:
    """An operator closes one joined channel, wherever its socket is."""
    from realtime.db import on_commit
    from realtime.layer import disconnect_send

    with transaction.atomic():
        activity_record(
            event_type=EventType.ADMIN_DISCONNECT,
            tenant=subscription.tenant,
            actor=actor,
            target=subscription.topic,
            details={
                "subscription": subscription.pk,
                "connection": subscription.connection,
            },
        )
        on_commit(
            disconnect_send,
            connection=subscription.connection,
            topic=subscription.topic,
            reason="Server requested disconnect",
        )


def subscriptions_sweep(*, now: Any = None) -> int:
    """Close socket subscriptions not seen for a while: their process died.

    Live processes mark their subscriptions seen every few seconds (the hub's
    ledger), so only the rows of a process that stopped are left behind.
    """
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.HERALD_SUBSCRIPTION_STALE_AFTER)
    return Subscription.objects.filter(
        state=Subscription.State.ACTIVE, last_seen_at__lt=stale
    ).update(state=Subscription.State.CLOSED, closed_at=now)
