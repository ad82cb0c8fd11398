"""Subscriptions: one row per joined channel of a live socket, and durable ones.

A durable subscription is made over REST (`POST /api/realtime/subscribe`) and
lives until it is closed: its changes are polled or pushed to a webhook.
"""

from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from realtime.validators import validate_identifier

CHANNEL_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$"


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
    # The postgres_changes bindings: id, event, schema, table and filter of each
    # (services.binding_summary), not the whole of what the client sent.
    bindings = models.JSONField(default=list, blank=True)
    # The tables those bindings name, space-separated (`*` for a schema binding):
    # what operators filter on.
    tables = models.CharField(max_length=255, blank=True, db_index=True)
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


class ChannelDefinition(models.Model):
    """A tenant-defined channel name for durable subscriptions.

    E.g. `form-responses` on table `form_responses`, filtered by `supplier_id`,
    whose value must equal the subscriber's `supplier_id` claim.
    """

    tenant = models.ForeignKey(
        "realtime.Tenant", on_delete=models.CASCADE, related_name="channels"
    )
    name = models.CharField(
        max_length=100, validators=[RegexValidator(CHANNEL_NAME_RE)]
    )
    table = models.CharField(max_length=63, validators=[validate_identifier])
    event = models.CharField(
        max_length=6,
        default="*",
        choices=[(e, e) for e in ("*", "INSERT", "UPDATE", "DELETE")],
    )
    filter_column = models.CharField(
        max_length=63,
        blank=True,
        validators=[validate_identifier],
        help_text="Blank: the whole table, no filter. Else subscribers must give "
        "a value for this column in `filters`.",
    )
    claim = models.CharField(
        max_length=63,
        blank=True,
        help_text="The claim the filter value must equal (service_role excepted). "
        "Blank: any value (row policies still apply).",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["tenant", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "name"], name="channeldefinition_unique_name"
            )
        ]

    def __str__(self) -> str:
        return f"{self.tenant.slug}:{self.name} → {self.table}"


class DurableSubscription(models.Model):
    """A REST subscription: who, what, how it is delivered, and how far it got."""

    class Delivery(models.TextChoices):
        POLLING = "polling"
        WEBHOOK = "webhook"

    class State(models.TextChoices):
        ACTIVE = "active"
        PAUSED = "paused", "paused (webhook failing)"
        CLOSED = "closed"

    tenant = models.ForeignKey(
        "realtime.Tenant",
        on_delete=models.CASCADE,
        related_name="durable_subscriptions",
    )
    # The owner, as the socket Subscription rows name it: role and token `sub`.
    role = models.CharField(max_length=63)
    sub = models.CharField(max_length=255, blank=True)
    # The claims the row policies are evaluated with when no request is at hand
    # (webhook delivery): a snapshot taken at subscribe time.
    claims = models.JSONField(default=dict, blank=True)
    channel = models.CharField(max_length=100, help_text="Channel name, or the table.")
    table = models.CharField(max_length=63, validators=[validate_identifier])
    event = models.CharField(max_length=6, default="*")
    filter = models.CharField(max_length=1000, blank=True)
    cursor = models.BigIntegerField(
        default=0, help_text="Every change up to this cursor has been handed out."
    )
    delivery = models.CharField(
        max_length=8, choices=Delivery.choices, default=Delivery.POLLING
    )
    webhook_url = models.URLField(max_length=2000, blank=True)
    webhook_secret = models.CharField(max_length=255, blank=True)
    state = models.CharField(max_length=8, choices=State.choices, default=State.ACTIVE)
    failure_count = models.PositiveIntegerField(
        default=0, help_text="Consecutive failed webhook attempts."
    )
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    delivered_count = models.PositiveBigIntegerField(default=0)
    last_delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["tenant", "sub", "state"]),
            models.Index(fields=["delivery", "state", "next_attempt_at"]),
        ]
        constraints = [
            models.CheckConstraint(
                condition=~Q(delivery="webhook") | ~Q(webhook_url=""),
                name="durablesubscription_webhook_has_url",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.tenant.slug}:{self.channel} ({self.state})"
