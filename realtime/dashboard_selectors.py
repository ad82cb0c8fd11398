"""Reads behind the operators' dashboard: plain data, no writes."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, TypedDict

from django.db.models import Count, Max, QuerySet
from django.utils import timezone

from audit.models import ActivityLog, EventType
from realtime.health import layer_ok
from realtime.limits import connections_now, deliveries_last_minute
from realtime.models import LiveUpdate, Tenant
from subscriptions.models import DurableSubscription, Subscription

# What the dashboard counts as a refusal: a client that was turned away.
REFUSAL_EVENTS = (
    EventType.JOIN_REFUSED,
    EventType.TOKEN_REFUSED,
    EventType.TOKEN_EXPIRED,
    EventType.RATE_LIMITED,
    EventType.AUTH_FAILED,
)
REFUSAL_WINDOW = timedelta(hours=1)
ACTIVITY_ROWS = 20


class TenantFigures(TypedDict):
    slug: str
    name: str
    suspended: bool
    connections: int
    channels: int
    deliveries: int
    refusals: int


class ActivityRow(TypedDict):
    id: int
    at: datetime
    event: str
    tenant: str
    actor: str
    target: str
    refusal: bool


class Snapshot(TypedDict):
    at: datetime
    tenants: list[TenantFigures]
    unattributed_refusals: int
    activity: list[ActivityRow]


def _refusals(
    *, since: datetime, tenant: Tenant | None = None
) -> dict[int | None, int]:
    """Refusals per tenant id since then (None: no tenant, e.g. an unknown key)."""
    rows = ActivityLog.objects.filter(
        event_type__in=REFUSAL_EVENTS, created_at__gte=since
    )
    if tenant is not None:
        rows = rows.filter(tenant=tenant)
    counts = (
        rows.order_by()
        .values("tenant_id")
        .annotate(count=Count("id"))
        .values_list("tenant_id", "count")
    )
    return dict(counts)


def _active_channels(*, tenant_ids: list[int]) -> dict[int, int]:
    rows = (
        Subscription.objects.filter(
            tenant_id__in=tenant_ids, state=Subscription.State.ACTIVE
        )
        .order_by()
        .values("tenant_id")
        .annotate(count=Count("id"))
        .values_list("tenant_id", "count")
    )
    return dict(rows)


def tenant_figures(*, refusals: dict[int | None, int]) -> list[TenantFigures]:
    """Every tenant's live figures, by slug."""
    tenants = list(
        Tenant.objects.order_by("slug").values_list("pk", "slug", "name", "is_active")
    )
    ids = [pk for pk, *_ in tenants]
    connections = connections_now(ids)
    deliveries = deliveries_last_minute(ids)
    channels = _active_channels(tenant_ids=ids)
    return [
        TenantFigures(
            slug=slug,
            name=name,
            suspended=not is_active,
            connections=connections.get(pk, 0),
            channels=channels.get(pk, 0),
            deliveries=deliveries.get(pk, 0),
            refusals=refusals.get(pk, 0),
        )
        for pk, slug, name, is_active in tenants
    ]


def _event_label(event_type: int) -> str:
    # A row written by a newer release may carry a type this one does not know.
    if event_type in EventType.values:
        return str(EventType(event_type).label)
    return str(event_type)


def activity_recent(*, limit: int = ACTIVITY_ROWS) -> list[ActivityRow]:
    """The newest activity rows across tenants, newest first."""
    rows = ActivityLog.objects.order_by("-created_at", "-id").values_list(
        "id", "created_at", "event_type", "tenant_slug", "actor", "target"
    )[:limit]
    return [
        ActivityRow(
            id=pk,
            at=at,
            event=_event_label(event_type),
            tenant=tenant,
            actor=actor,
            target=target,
            refusal=event_type in REFUSAL_EVENTS,
        )
        for pk, at, event_type, tenant, actor, target in rows
    ]


def dashboard_snapshot() -> Snapshot:
    """Everything the dashboard shows, read at one moment."""
    now = timezone.now()
    refusals = _refusals(since=now - REFUSAL_WINDOW)
    return Snapshot(
        at=now,
        tenants=tenant_figures(refusals=refusals),
        unattributed_refusals=refusals.get(None, 0),
        activity=activity_recent(),
    )


class TenantHealth(TypedDict):
    slug: str
    healthy: bool
    suspended: bool
    database: str
    channel_layer: str
    connections: int
    channels: int
    durable_subscriptions: int
    deliveries_last_minute: int
    refusals_last_hour: int
    last_activity_at: datetime | None
    last_change_at: datetime | None


def _latest(rows: QuerySet[Any], field: str) -> datetime | None:
    return rows.order_by().aggregate(latest=Max(field))["latest"]


def tenant_health(*, tenant: Tenant) -> TenantHealth:
    """One tenant's live figures and whether Herald can serve it now.

    Healthy: the database and the channel layer answer and the tenant is not
    suspended (a suspended tenant is refused by design, not broken).
    """
    layer_up = layer_ok()
    since = timezone.now() - REFUSAL_WINDOW
    return TenantHealth(
        slug=tenant.slug,
        healthy=layer_up and tenant.is_active,
        suspended=not tenant.is_active,
        # This read got the tenant from the database: it answers.
        database="ok",
        channel_layer="ok" if layer_up else "down",
        connections=connections_now([tenant.pk]).get(tenant.pk, 0),
        channels=_active_channels(tenant_ids=[tenant.pk]).get(tenant.pk, 0),
        durable_subscriptions=DurableSubscription.objects.filter(
            tenant=tenant, state=DurableSubscription.State.ACTIVE
        ).count(),
        deliveries_last_minute=deliveries_last_minute([tenant.pk]).get(tenant.pk, 0),
        refusals_last_hour=_refusals(since=since, tenant=tenant).get(tenant.pk, 0),
        last_activity_at=_latest(
            ActivityLog.objects.filter(tenant=tenant), "created_at"
        ),
        last_change_at=_latest(
            LiveUpdate.objects.filter(tenant=tenant), "commit_timestamp"
        ),
    )
