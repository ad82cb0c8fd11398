from django.apps import AppConfig
from django.conf import settings
from django.contrib.admin import apps as admin_apps


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

        # A mistyped HERALD_TRUSTED_PROXIES stops the start, not the requests.
        trusted_networks(settings.HERALD_TRUSTED_PROXIES)
