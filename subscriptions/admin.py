from typing import Any

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest

from realtime.admin import staff_actor
from subscriptions.durable import (
    durable_subscription_close,
    durable_subscription_pause,
    durable_subscription_resume,
)
from subscriptions.models import ChannelDefinition, DurableSubscription, Subscription
from subscriptions.services import subscription_disconnect


class TableFilter(admin.SimpleListFilter):
    """The tables a socket subscription's bindings name."""

    title = "table"
    parameter_name = "table"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        names = Subscription.objects.values_list("tables", flat=True).distinct()
        tables = sorted({t for joined in names for t in joined.split()})
        return [(t, t) for t in tables[:100]]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        table = self.value()
        if not table:
            return queryset
        return queryset.filter(
            Q(tables=table)
            | Q(tables__startswith=f"{table} ")
            | Q(tables__endswith=f" {table}")
            | Q(tables__contains=f" {table} ")
        )


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    list_display = [
        "topic",
        "tenant",
        "role",
        "sub",
        "state",
        "node",
        "delivered_count",
        "last_seen_at",
    ]
    list_filter = ["state", "tenant", "role", TableFilter, "node"]
    search_fields = ["topic", "sub", "tenant__slug", "connection"]
    date_hierarchy = "created_at"
    actions = ["disconnect"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Disconnect the selected channels now")
    def disconnect(
        self, request: HttpRequest, queryset: QuerySet[Subscription]
    ) -> None:
        active = queryset.filter(state=Subscription.State.ACTIVE)
        for subscription in active:
            subscription_disconnect(
                subscription=subscription, actor=staff_actor(request)
            )
        self.message_user(request, f"Disconnected {len(active)} channel(s).")


@admin.register(ChannelDefinition)
class ChannelDefinitionAdmin(admin.ModelAdmin):
    list_display = ["name", "tenant", "table", "event", "filter_column", "claim"]
    list_filter = ["tenant"]
    search_fields = ["name", "table", "tenant__slug"]


@admin.register(DurableSubscription)
class DurableSubscriptionAdmin(admin.ModelAdmin):
    """Watch deliveries; pause, resume or close. A paused webhook shows why."""

    list_display = [
        "id",
        "channel",
        "tenant",
        "sub",
        "delivery",
        "state",
        "cursor",
        "delivered_count",
        "failure_count",
        "next_attempt_at",
        "last_error",
    ]
    list_filter = ["state", "delivery", "tenant"]
    search_fields = ["channel", "sub", "webhook_url", "tenant__slug"]
    exclude = ["webhook_secret"]
    actions = ["resume", "pause", "close"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Resume selected (retry webhooks now)")
    def resume(
        self, request: HttpRequest, queryset: QuerySet[DurableSubscription]
    ) -> None:
        for subscription in queryset.exclude(state=DurableSubscription.State.CLOSED):
            durable_subscription_resume(
                subscription=subscription, actor=staff_actor(request)
            )

    @admin.action(description="Pause selected")
    def pause(
        self, request: HttpRequest, queryset: QuerySet[DurableSubscription]
    ) -> None:
        for subscription in queryset.filter(state=DurableSubscription.State.ACTIVE):
            durable_subscription_pause(
                subscription=subscription, actor=staff_actor(request)
            )

    @admin.action(description="Close selected")
    def close(
        self, request: HttpRequest, queryset: QuerySet[DurableSubscription]
    ) -> None:
        for subscription in queryset.exclude(state=DurableSubscription.State.CLOSED):
            durable_subscription_close(
                subscription=subscription, actor=staff_actor(request)
            )
