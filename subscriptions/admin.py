from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from subscriptions.models import Subscription


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
    list_filter = ["state", "tenant", "role"]
    search_fields = ["topic", "sub", "tenant__slug"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
