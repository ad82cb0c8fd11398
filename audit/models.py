"""The activity log: an append-only record of security-relevant events."""

from django.db import models
from django.utils import timezone


class EventType(models.IntegerChoices):
    """Numbered in ranges per entity (as Zulip's RealmAuditLog); never renumber."""

    # 100: tenants
    TENANT_CREATED = 101, "tenant created"
    TENANT_SUSPENDED = 102, "tenant suspended"
    TENANT_RESUMED = 103, "tenant resumed"
    TENANT_UPDATED = 104, "tenant updated"
    JWT_SECRET_ROTATED = 105, "JWT secret rotated"
    # 200: keys
    KEY_CREATED = 201, "key created"
    KEY_REVOKED = 202, "key revoked"
    # 300: policies
    POLICY_CHANGED = 301, "policy changed"
    POLICY_DELETED = 302, "policy deleted"
    # 400: sockets and channels
    CONNECT = 401, "connect"
    DISCONNECT = 402, "disconnect"
    JOIN = 403, "join"
    LEAVE = 404, "leave"
    JOIN_REFUSED = 405, "join refused"
    ADMIN_DISCONNECT = 406, "admin disconnect"
    # 500: refusals
    TOKEN_REFUSED = 501, "token refused"
    TOKEN_EXPIRED = 502, "token expired"
    RATE_LIMITED = 503, "rate limited"
    AUTH_FAILED = 504, "authentication failed"
    # 600: publishing
    PUBLISH = 601, "publish"
    REST_BROADCAST = 602, "REST broadcast"
    CONFLICT = 603, "conflict"
    # 700: durable subscriptions
    SUBSCRIBE = 701, "subscribe"
    UNSUBSCRIBE = 702, "unsubscribe"
    # 800: change capture
    TABLE_TRACKED = 801, "table tracked"
    TABLE_UNTRACKED = 802, "table untracked"
    # 900: identity
    ISSUER_ADDED = 901, "issuer added"
    ISSUER_CHANGED = 902, "issuer changed"
    ISSUER_REMOVED = 903, "issuer removed"
    # 1000: the operators' tenant API (its writes are recorded as above)
    OPERATOR_CALL = 1001, "operator API call"


class ActivityLog(models.Model):
    """One event. Actor, tenant and target are snapshots so rows outlive them."""

    created_at = models.DateTimeField(default=timezone.now, editable=False)
    event_type = models.PositiveSmallIntegerField(choices=EventType.choices)
    tenant = models.ForeignKey(
        "realtime.Tenant",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    tenant_slug = models.CharField(max_length=63, blank=True)
    actor = models.CharField(max_length=255, blank=True)
    role = models.CharField(max_length=63, blank=True)
    target = models.CharField(max_length=255, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "activity"
        verbose_name_plural = "activity"
        indexes = [
            models.Index(fields=["tenant", "-created_at"]),
            models.Index(fields=["event_type", "-created_at"]),
            models.Index(fields=["created_at"]),
        ]

    def __str__(self) -> str:
        label = EventType(self.event_type).label
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {label} {self.tenant_slug}"
