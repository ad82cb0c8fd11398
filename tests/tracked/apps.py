from django.apps import AppConfig


class TrackedConfig(AppConfig):
    """A stand-in for a user's own app whose models Herald tracks."""

    name = "tests.tracked"
    label = "tracked"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from realtime.tracking import track
        from tests.tracked.models import Article

        track(Article, tenant="tenant", table="articles")
