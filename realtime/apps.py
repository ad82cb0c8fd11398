from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.contrib.admin import apps as admin_apps
from django.db.models.signals import post_delete, post_migrate


class HeraldAdminConfig(admin_apps.AdminConfig):
    """Django's admin with Herald's site: its login is throttled."""

    default = False  # named in INSTALLED_APPS; `realtime` is RealtimeConfig
    default_site = "realtime.admin_site.HeraldAdminSite"


class RealtimeConfig(AppConfig):
    name = "realtime"
    verbose_name = "Realtime"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the OpenAPI extensions (drf-spectacular finds them by import).
        from realtime.api import schema  # noqa: F401
        from realtime.client_ip import trusted_networks
        from realtime.tracking import tracked_models_install
        from realtime.wake import notify_follow_setting

        # A mistyped HERALD_TRUSTED_PROXIES stops the start, not the requests.
        trusted_networks(settings.HERALD_TRUSTED_PROXIES)

        # Capture triggers of tracked models follow their tables: created or
        # regenerated after every migrate (and the test database's flush).
        post_migrate.connect(
            tracked_models_install, sender=self, dispatch_uid="herald-capture"
        )
        post_migrate.connect(
            notify_follow_setting, sender=self, dispatch_uid="herald-relay-notify"
        )
        post_delete.connect(
            _tenant_deleted,
            sender=self.get_model("Tenant"),
            dispatch_uid="herald-tenant-deleted",
        )


def _tenant_deleted(instance: Any, **kwargs: Any) -> None:
    from realtime.capture.services import tenant_changes_discard

    tenant_changes_discard(tenant_id=instance.pk)
