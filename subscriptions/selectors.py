"""Reads about subscriptions: whose they are, what they match, and status numbers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Max, Q, QuerySet, Sum
from django.utils import timezone

from realtime.auth import Principal
from realtime.bindings import HERALD_SCHEMA, Binding
from realtime.filters import compile_filter
from subscriptions.models import DurableSubscription, Subscription

STATUS_WINDOW = timedelta(hours=24)


def owner_q(principal: Principal) -> Q:
    """A principal's rows: same tenant and token `sub`; for a key, same role."""
    if principal.sub:
        return Q(tenant=principal.tenant, sub=principal.sub[:255])
    return Q(tenant=principal.tenant, role=principal.role[:63], sub="")


def names_an_owner(principal: Principal) -> bool:
    """A user token's `sub`, or the tenant's backend (service_role).

    A bare publishable key, or a token without `sub`, could be any visitor:
    what one of them made, all of them could list, poll and close.
    """
    return bool(principal.sub) or principal.is_service


def durable_subscriptions_of(
    principal: Principal,
) -> QuerySet[DurableSubscription]:
    if not names_an_owner(principal):
        # Rows made before a `sub` was required belong to no visitor in particular.
        return DurableSubscription.objects.none()
    return DurableSubscription.objects.filter(owner_q(principal))


def subscription_binding(subscription: DurableSubscription) -> Binding:
    """The subscription as a postgres_changes binding: matched as sockets are."""
    return Binding(
        id=0,
        event=subscription.event,
        schema=HERALD_SCHEMA,
        table=subscription.table,
        filter=compile_filter(subscription.filter),
        raw={},
    )


@dataclass(frozen=True, slots=True)
class PrincipalStatus:
    connected: bool
    active_channels: int
    message_count: int
    last_message_at: datetime | None
    subscriptions: list[DurableSubscription]


def principal_status(
    *, principal: Principal, now: datetime | None = None
) -> PrincipalStatus:
    """What `GET /api/realtime/status` reports (README, "Status numbers")."""
    since = (now or timezone.now()) - STATUS_WINDOW
    sockets = Subscription.objects.filter(owner_q(principal))
    active = sockets.filter(state=Subscription.State.ACTIVE).count()
    durable = durable_subscriptions_of(principal)
    count, last = 0, None
    for rows in (sockets, durable):
        recent = rows.filter(last_delivered_at__gte=since).aggregate(
            count=Sum("delivered_count"), last=Max("last_delivered_at")
        )
        count += recent["count"] or 0
        if recent["last"] is not None and (last is None or recent["last"] > last):
            last = recent["last"]
    return PrincipalStatus(
        connected=active > 0,
        active_channels=active,
        message_count=count,
        last_message_at=last,
        subscriptions=list(durable.exclude(state=DurableSubscription.State.CLOSED)),
    )
