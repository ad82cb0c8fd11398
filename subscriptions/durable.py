"""Durable subscriptions: subscribe, unsubscribe, poll, pause and resume.

Made over REST for the calling principal. Each names a table, an event and a
filter (the postgres_changes grammar), either through a tenant-defined channel
(`ChannelDefinition`) or inline, and is delivered by polling or by webhook.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from audit.models import EventType
from audit.services import activity_record
from realtime import errors
from realtime.auth import Principal
from realtime.change_log import (
    ChangePage,
    Reader,
    changes_after,
    cursor_check,
    cursor_later,
    cursor_position,
    log_head,
    position_of,
)
from realtime.models import Tenant
from subscriptions.models import DurableSubscription
from subscriptions.selectors import (
    durable_subscriptions_of,
    names_an_owner,
    subscription_binding,
)
from subscriptions.targets import ChannelRequest, Target, subscription_targets
from subscriptions.webhooks import webhook_url_check

# Claims that change with every token; the snapshot keeps what policies read.
VOLATILE_CLAIMS = frozenset({"exp", "iat", "nbf", "jti"})


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    url: str
    secret: str


def _open(
    principal: Principal, target: Target, webhook: WebhookTarget | None, head: int
) -> DurableSubscription:
    delivery = (
        DurableSubscription.Delivery.WEBHOOK
        if webhook
        else DurableSubscription.Delivery.POLLING
    )
    fields = {
        "channel": target.channel,
        "table": target.table,
        "event": target.event,
        "filter": target.filter,
        "delivery": delivery,
        "webhook_url": webhook.url if webhook else "",
    }
    # The same request again returns the same subscription (and resumes it).
    existing = (
        durable_subscriptions_of(principal)
        .filter(**fields)
        .exclude(state=DurableSubscription.State.CLOSED)
        .first()
    )
    if existing is not None:
        if webhook:
            existing.webhook_secret = webhook.secret
        if existing.state == DurableSubscription.State.PAUSED:
            _resume(existing)
        existing.save()
        return existing
    return DurableSubscription.objects.create(
        tenant=principal.tenant,
        role=principal.role[:63],
        sub=principal.sub[:255],
        claims={k: v for k, v in principal.claims.items() if k not in VOLATILE_CLAIMS},
        cursor=head,
        webhook_secret=webhook.secret if webhook else "",
        **fields,
    )


def durable_subscription_create(
    *,
    principal: Principal,
    channels: Sequence[ChannelRequest],
    filters: Mapping[str, Any],
    webhook: WebhookTarget | None = None,
    ip: str | None = None,
) -> list[DurableSubscription]:
    """Subscribe the principal; changes after the current head are delivered."""
    if not names_an_owner(principal):
        raise errors.Forbidden(
            "Durable subscriptions belong to someone: a user token with `sub` is "
            "required (Authorization: Bearer), or a secret key"
        )
    targets = subscription_targets(
        principal=principal, channels=channels, filters=filters
    )
    if webhook is not None:
        webhook_url_check(webhook.url)
    head = log_head(tenant_id=principal.tenant.pk)
    with transaction.atomic():
        opened = [_open(principal, target, webhook, head) for target in targets]
        activity_record(
            event_type=EventType.SUBSCRIBE,
            principal=principal,
            target=",".join(t.channel for t in targets)[:255],
            ip=ip,
            details={
                "ids": [s.pk for s in opened],
                "delivery": opened[0].delivery if opened else None,
            },
        )
    return opened


def durable_subscriptions_close(
    *, principal: Principal, ids: Sequence[int], ip: str | None = None
) -> list[int]:
    """Close the principal's subscriptions, all or none (404 names the unknown)."""
    rows = durable_subscriptions_of(principal).filter(pk__in=ids)
    open_rows = rows.exclude(state=DurableSubscription.State.CLOSED)
    found = set(rows.values_list("pk", flat=True))
    missing = sorted(set(ids) - found)
    if missing:
        raise errors.NotFound(f"No subscription {missing[0]} of yours")
    with transaction.atomic():
        closing = sorted(open_rows.values_list("pk", flat=True))
        open_rows.update(
            state=DurableSubscription.State.CLOSED, closed_at=timezone.now()
        )
        activity_record(
            event_type=EventType.UNSUBSCRIBE,
            principal=principal,
            target=",".join(map(str, closing))[:255],
            ip=ip,
            details={"ids": closing},
        )
    return sorted(set(ids))


def durable_subscription_poll(
    *,
    principal: Principal,
    subscription_id: int,
    after: int | None,
    limit: int,
) -> tuple[DurableSubscription, ChangePage]:
    """Changes after `after` (default: the subscription's cursor) the principal may see.

    What is returned counts as delivered: the cursor moves to the page's
    `next_cursor`. Polling an older `after` reads again without counting twice.
    """
    subscription = (
        durable_subscriptions_of(principal)
        .exclude(state=DurableSubscription.State.CLOSED)
        .filter(pk=subscription_id)
        .first()
    )
    if subscription is None:
        raise errors.NotFound(f"No open subscription {subscription_id} of yours")
    if subscription.delivery == DurableSubscription.Delivery.WEBHOOK:
        raise errors.Conflict(
            "This subscription is delivered by webhook; polling it would skip "
            "changes its receiver has not had"
        )
    start = subscription.cursor if after is None else after
    cursor_check(tenant=principal.tenant, cursor=start)
    page = changes_after(
        reader=Reader(
            tenant_id=principal.tenant.pk, role=principal.role, claims=principal.claims
        ),
        after=start,
        limit=limit,
        tables=[subscription.table],
        binding=subscription_binding(subscription),
    )
    return _handed_out(subscription, page), page


def _handed_out(
    subscription: DurableSubscription, page: ChangePage
) -> DurableSubscription:
    with transaction.atomic():
        locked = DurableSubscription.objects.select_for_update().get(pk=subscription.pk)
        if cursor_later(
            tenant_id=locked.tenant_id, cursor=page.next_cursor, than=locked.cursor
        ):
            # Log order, not id order (realtime/change_log.py).
            handed = cursor_position(tenant_id=locked.tenant_id, cursor=locked.cursor)
            fresh = sum(1 for c in page.changes if position_of(c) > handed)
            locked.cursor = page.next_cursor
            if fresh:
                locked.delivered_count += fresh
                locked.last_delivered_at = timezone.now()
            locked.save(
                update_fields=["cursor", "delivered_count", "last_delivered_at"]
            )
    return locked


def _resume(subscription: DurableSubscription) -> None:
    subscription.state = DurableSubscription.State.ACTIVE
    subscription.failure_count, subscription.last_error = 0, ""
    subscription.next_attempt_at = None
    # Changes retention deleted while paused are lost: skip past them.
    pruned = (
        Tenant.objects.filter(pk=subscription.tenant_id)
        .values_list("changes_pruned_through", flat=True)
        .get()
    )
    subscription.cursor = max(subscription.cursor, pruned)


def durable_subscription_resume(
    *, subscription: DurableSubscription, actor: str = ""
) -> DurableSubscription:
    """Resume a paused subscription (admin): retries start now, from its cursor."""
    with transaction.atomic():
        _resume(subscription)
        subscription.save()
        activity_record(
            event_type=EventType.SUBSCRIBE,
            tenant=subscription.tenant,
            actor=actor,
            target=subscription.channel,
            details={"id": subscription.pk, "resumed": True},
        )
    return subscription


def durable_subscription_pause(
    *, subscription: DurableSubscription, actor: str = ""
) -> DurableSubscription:
    """Stop delivering until resumed; changes keep accumulating behind the cursor."""
    with transaction.atomic():
        subscription.state = DurableSubscription.State.PAUSED
        subscription.last_error = f"paused by {actor or 'an operator'}"[:500]
        subscription.save()
        activity_record(
            event_type=EventType.UNSUBSCRIBE,
            tenant=subscription.tenant,
            actor=actor,
            target=subscription.channel,
            details={"id": subscription.pk, "paused": True},
        )
    return subscription


def durable_subscription_close(
    *, subscription: DurableSubscription, actor: str = ""
) -> DurableSubscription:
    """Close one subscription (admin): nothing more is delivered."""
    with transaction.atomic():
        subscription.state = DurableSubscription.State.CLOSED
        subscription.closed_at = timezone.now()
        subscription.save()
        activity_record(
            event_type=EventType.UNSUBSCRIBE,
            tenant=subscription.tenant,
            actor=actor,
            target=subscription.channel,
            details={"ids": [subscription.pk]},
        )
    return subscription
