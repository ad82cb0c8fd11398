"""Subscriptions: one row per joined channel of a live socket."""

from django.db import models
from django.utils import timezone


class Subscription(models.Model):
    """A channel joined by a socket: who, what, where, and how much it received."""

    class State(models.TextChoices):
        ACTIVE = "active"
        CLOSED = "closed"

    tenant = models.ForeignKey(
        "realtime.Tenant", on_delete=models.CASCADE, related_name="subscriptions"
    )
    topic = models.CharField(max_length=255)
    role = models.CharField(max_length=63)
    sub = models.CharField(max_length=255, blank=True, help_text="The token's `sub`.")
    # The client's postgres_changes bindings as it sent them, with their ids.
    bindings = models.JSONField(default=list, blank=True)
    private = models.BooleanField(default=False)
    # Which server process holds the socket, and the socket's channel name there.
    node = models.CharField(max_length=100)
    connection = models.CharField(max_length=255)
    join_ref = models.CharField(max_length=64, blank=True)
    state = models.CharField(max_length=8, choices=State.choices, default=State.ACTIVE)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_seen_at = models.DateTimeField(default=timezone.now)
    closed_at = models.DateTimeField(null=True, blank=True)
    delivered_count = models.PositiveBigIntegerField(default=0)
    last_delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["tenant", "state"]),
            models.Index(fields=["state", "last_seen_at"]),
            models.Index(fields=["node", "state"]),
        ]

    def __str__(self) -> str:
        return f"{self.tenant.slug}:{self.topic} ({self.state})"
