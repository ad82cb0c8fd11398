from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from audit.models import ActivityLog


@admin.register(ActivityLog)
class ActivityLogAdmin(admin.ModelAdmin):
    """Read-only: the activity log is append-only."""

    list_display = ["created_at", "event_type", "tenant_slug", "actor", "target", "ip"]
    list_filter = ["event_type", "tenant_slug"]
    search_fields = ["actor", "target", "tenant_slug"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
