from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_delete, post_migrate


class RealtimeConfig(AppConfig):
    name = "realtime"
    verbose_name = "Realtime"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the OpenAPI extensions (drf-spectacular finds them by import).
        from realtime.api import schema  # noqa: F401
        from realtime.tracking import tracked_models_install

        # Capture triggers of tracked models follow their tables: created or
        # regenerated after every migrate (and the test database's flush).
        post_migrate.connect(
            tracked_models_install, sender=self, dispatch_uid="herald-capture"
        )
        post_delete.connect(
            _tenant_deleted,
            sender=self.get_model("Tenant"),
            dispatch_uid="herald-tenant-deleted",
        )


def _tenant_deleted(instance: Any, **kwargs: Any) -> None:
    from realtime.capture.services import tenant_changes_discard

    tenant_changes_discard(tenant_id=instance.pk)
