"""Tenants, their keys, issuers and policies, and the change log."""

from django.core.validators import (
    MaxValueValidator,
    MinValueValidator,
    RegexValidator,
    URLValidator,
)
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone

from realtime.validators import (
    SLUG_RE,
    validate_algorithms,
    validate_claim_names,
    validate_identifier,
    validate_issuer_keys,
    validate_rate_limits,
    validate_rules,
)


class Tenant(models.Model):
    """An isolated customer: owns keys, a JWT secret, policies and limits."""

    slug = models.SlugField(
        max_length=63, unique=True, validators=[RegexValidator(SLUG_RE)]
    )
    name = models.CharField(max_length=200)
    jwt_secret = models.CharField(max_length=128)
    is_active = models.BooleanField(
        default=True, help_text="Off: sockets are closed and new ones refused."
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    private_only = models.BooleanField(
        default=False,
        help_text="On: joins of public channels are refused (PrivateOnly), as "
        "Supabase's tenant flag of the same name.",
    )

    # Limits; the defaults follow Supabase Realtime's.
    max_concurrent_users = models.PositiveIntegerField(default=200)
    max_connections_per_user = models.PositiveIntegerField(default=100)
    max_channels_per_client = models.PositiveIntegerField(default=100)
    max_joins_per_second = models.PositiveIntegerField(default=100)
    max_events_per_second = models.PositiveIntegerField(default=100)
    max_presence_events_per_second = models.PositiveIntegerField(default=1000)
    max_payload_size_kb = models.PositiveIntegerField(default=3000)
    change_retention_hours = models.PositiveIntegerField(
        default=24 * 7, help_text="How long changes stay available for catch-up."
    )
    broadcast_retention_hours = models.PositiveIntegerField(
        default=72,
        db_default=72,
        help_text="How long broadcasts to private topics stay available for "
        "replay (as Supabase: 72 hours).",
    )
    change_feeds = models.BooleanField(
        default=False,
        db_default=False,
        help_text="On: the private topic `changes:<table>` carries the table's "
        "changes as broadcasts whose meta.id is the change's cursor (README, "
        "Resume cursor).",
    )
    rate_limits = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_rate_limits],
        help_text="REST limits per principal overriding HERALD_RATE_LIMITS, e.g. "
        '{"subscribe": "10/m", "publish": "1000/s"}.',
    )
    # The highest cursor of this tenant that retention deleted: a catch-up from
    # an older cursor has lost changes and must reload (see change_log.py).
    changes_pruned_through = models.PositiveBigIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class ApiKey(models.Model):
    """A publishable (anon) or secret (service_role) key; only its hash is kept."""

    class Kind(models.TextChoices):
        PUBLISHABLE = "publishable", "publishable (pk_, role anon)"
        SECRET = "secret", "secret (sk_, role service_role)"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="keys")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    name = models.CharField(max_length=100, blank=True)
    # The first characters, so operators can tell keys apart without the secret.
    prefix = models.CharField(max_length=16, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["tenant", "-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.tenant.slug})"

    @property
    def role(self) -> str:
        return "service_role" if self.kind == self.Kind.SECRET else "anon"


class RowPolicy(models.Model):
    """Which rows of a table a role may see: every rule row[column] == claims[claim]."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="row_policies"
    )
    table = models.CharField(max_length=63, validators=[validate_identifier])
    role = models.CharField(max_length=63)
    rules = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_rules],
        help_text='[{"column": "site_id", "claim": "site_id"}]; empty: every row. '
        '{"column": "site_id", "claim": "site_ids", "any": true}: one of a list.',
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["tenant", "table", "role", "id"]
        verbose_name_plural = "row policies"
        indexes = [models.Index(fields=["tenant", "table", "role"])]

    def __str__(self) -> str:
        rules = ", ".join(
            f"{r['column']}{' in ' if r.get('any') else '='}claims.{r['claim']}"
            for r in self.rules
        )
        return f"{self.tenant.slug}.{self.table} for {self.role}: {rules or 'all rows'}"


class LiveUpdate(models.Model):
    """One published change: the change log, and the outbox for live delivery.

    The id is the cursor clients catch up from. Rows are only ever appended
    (and deleted by retention); nothing updates them after commit. On
    PostgreSQL each row also records its transaction (an `xid` column the
    model does not map, migration 0009): readers follow (xid, id) order,
    realtime/change_log.py.
    """

    class Type(models.TextChoices):
        INSERT = "INSERT"
        UPDATE = "UPDATE"
        DELETE = "DELETE"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    table = models.CharField(max_length=63, validators=[validate_identifier])
    type = models.CharField(max_length=6, choices=Type.choices)
    record = models.JSONField(null=True, blank=True)
    old_record = models.JSONField(null=True, blank=True)
    # [{"name", "type"}] with Postgres type names, as Supabase sends them.
    columns = models.JSONField(default=list)
    commit_timestamp = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["tenant", "id"], name="liveupdate_tenant_cursor"),
            models.Index(
                fields=["tenant", "table", "id"], name="liveupdate_table_cursor"
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(type__in=["INSERT", "UPDATE", "DELETE"]),
                name="liveupdate_type_valid",
            ),
            models.CheckConstraint(
                condition=Q(type="DELETE") | Q(record__isnull=False),
                name="liveupdate_record_unless_delete",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.type} {self.table}"


class ChannelPolicy(models.Model):
    """Who may read or write a private broadcast/presence topic.

    `pattern` matches a topic (the part after `realtime:`): `*` stands for any
    run of characters and `{claim}` for the principal's value of that claim,
    e.g. `site:{site_id}`.
    """

    class Extension(models.TextChoices):
        ANY = "*", "broadcast and presence"
        BROADCAST = "broadcast"
        PRESENCE = "presence"

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="channel_policies"
    )
    pattern = models.CharField(max_length=255)
    role = models.CharField(max_length=63, blank=True, help_text="Blank: any role.")
    extension = models.CharField(
        max_length=9, choices=Extension.choices, default=Extension.ANY
    )
    read = models.BooleanField(default=True)
    write = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["tenant", "pattern", "id"]
        verbose_name_plural = "channel policies"

    def __str__(self) -> str:
        rights = "+".join(
            r for r, on in (("read", self.read), ("write", self.write)) if on
        )
        return (
            f"{self.tenant.slug}: {self.pattern} ({self.role or 'any role'}: {rights})"
        )


class RecordVersion(models.Model):
    """The last published version of one record, for last-write-wins publishing.

    A version is `(updated_at, device_id)`, compared in that order: the device id
    only breaks ties between equal timestamps, so every server agrees on a winner.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    table = models.CharField(max_length=63, validators=[validate_identifier])
    pk_value = models.CharField(max_length=255)
    # Null until a first version is accepted (the row is created to be locked).
    updated_at = models.DateTimeField(null=True, blank=True)
    device_id = models.CharField(max_length=255, blank=True)
    seq = models.BigIntegerField(null=True, blank=True, help_text="Its change cursor.")
    conflicts = models.PositiveIntegerField(
        default=0, help_text="Stale changes refused for this record."
    )

    class Meta:
        ordering = ["tenant", "table", "pk_value"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "table", "pk_value"], name="recordversion_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id}.{self.table}#{self.pk_value} @ {self.updated_at}"


class TrackedTable(models.Model):
    """A table whose writes the database records as changes (realtime.capture).

    Kept in step with the triggers by realtime.capture.services: a row here
    means the table's triggers are installed.
    """

    class TenantKind(models.TextChoices):
        ID = "id", "a column holding the tenant's id"
        SLUG = "slug", "a column holding the tenant's slug"
        FIXED = "fixed", "one tenant for every row"

    class Source(models.TextChoices):
        MODEL = "model", "track() on a Django model"
        COMMAND = "command", "track_table (command or admin)"

    db_table = models.CharField(
        max_length=63, unique=True, validators=[validate_identifier]
    )
    table = models.CharField(
        max_length=63,
        validators=[validate_identifier],
        help_text="The name its changes are published under.",
    )
    tenant_kind = models.CharField(max_length=5, choices=TenantKind.choices)
    tenant_value = models.CharField(
        max_length=63, help_text="The tenant column, or the fixed tenant's slug."
    )
    exclude = models.JSONField(default=list, blank=True)
    source = models.CharField(max_length=7, choices=Source.choices)
    # Rows naming no existing tenant are skipped, never an error for the
    # writer: counted here by the trigger itself.
    skipped = models.PositiveBigIntegerField(default=0, db_default=0, editable=False)
    last_skipped_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["db_table"]

    def __str__(self) -> str:
        return self.db_table


class HeraldMessage(models.Model):
    """A broadcast written by the database: sent to its topic once committed.

    Any transaction (a trigger, psql, another program) may insert a row, or
    call herald_send(...) on PostgreSQL; the relay (realtime/relay.py) reads
    committed rows in log order (realtime/change_log.py) and broadcasts them
    as a REST broadcast would.
    """

    tenant_slug = models.CharField(max_length=63)
    topic = models.CharField(max_length=255)
    event = models.CharField(max_length=255)
    payload = models.JSONField(null=True, blank=True)
    private = models.BooleanField(default=False, db_default=False)
    created_at = models.DateTimeField(default=timezone.now, db_default=Now())
    # Stored for replay by Herald after it sent the broadcast itself (REST or
    # socket): the relay does not send it again.
    sent_live = models.BooleanField(default=False, db_default=False)

    class Meta:
        db_table = "herald_messages"
        ordering = ["id"]
        indexes = [
            models.Index(fields=["tenant_slug", "id"], name="herald_messages_cursor"),
            models.Index(fields=["created_at"], name="herald_messages_created"),
            models.Index(
                fields=["tenant_slug", "topic", "created_at"],
                name="herald_messages_replay",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.tenant_slug} {self.topic} {self.event}"


class TrustedIssuer(models.Model):
    """An identity provider whose tokens a tenant accepts (see README, Identity).

    Its keys come from exactly one source: a JWKS URL, static keys (a JWKS or
    PEM public keys), or a shared HMAC secret. The algorithms allowed follow
    the keys' kind, so an HMAC algorithm never meets a public key.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="issuers")
    issuer = models.CharField(max_length=255, help_text="The tokens' `iss`, exactly.")
    jwks_url = models.URLField(max_length=500, blank=True)
    static_keys = models.TextField(
        blank=True, help_text="A JWKS (JSON) or PEM public keys."
    )
    hs_secret = models.CharField(max_length=512, blank=True)
    algorithms = models.JSONField(default=list, validators=[validate_algorithms])
    audience = models.CharField(
        max_length=255, blank=True, help_text="Required `aud`; blank: not checked."
    )
    leeway = models.PositiveIntegerField(
        default=0, help_text="Seconds of clock skew allowed on exp, nbf and iat."
    )
    sub_claim = models.CharField(max_length=63, default="sub")
    role_claim = models.CharField(max_length=63, default="role")
    default_role = models.CharField(
        max_length=63, blank=True, help_text="The role of a token without one."
    )
    copied_claims = models.JSONField(
        null=True,
        blank=True,
        validators=[validate_claim_names],
        help_text="Claims kept for policies; empty: all of them.",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["tenant", "issuer", "id"]
        indexes = [models.Index(fields=["tenant", "issuer"])]
        constraints = [
            models.CheckConstraint(
                condition=(
                    (~Q(jwks_url="") & Q(static_keys="") & Q(hs_secret=""))
                    | (Q(jwks_url="") & ~Q(static_keys="") & Q(hs_secret=""))
                    | (Q(jwks_url="") & Q(static_keys="") & ~Q(hs_secret=""))
                ),
                name="trustedissuer_one_key_source",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.tenant.slug}: {self.issuer}"

    @property
    def is_symmetric(self) -> bool:
        return bool(self.hs_secret)

    def clean(self) -> None:
        validate_issuer_keys(
            jwks_url=self.jwks_url,
            static_keys=self.static_keys,
            hs_secret=self.hs_secret,
            algorithms=self.algorithms,
        )


class AuthCallback(models.Model):
    """A tenant's authorization callback: its own endpoint decides who a
    socket is, for shops whose users have a session and no token.

    Herald signs each request with `secret` (HMAC-SHA256, see README,
    "Authorization callback"); the secret is shown once, when it is made.
    """

    tenant = models.OneToOneField(
        Tenant, on_delete=models.CASCADE, related_name="auth_callback"
    )
    url = models.URLField(
        max_length=500,
        validators=[URLValidator(schemes=["http", "https"])],
        help_text="http(s) URL Herald POSTs to.",
    )
    secret = models.CharField(max_length=128, editable=False)
    on_join = models.BooleanField(
        default=False, help_text="Also ask on each join of a private channel."
    )
    timeout = models.FloatField(
        default=2.0,
        validators=[MinValueValidator(0.1), MaxValueValidator(10.0)],
        help_text="Seconds for the whole answer; past it, the socket is refused.",
    )
    default_ttl = models.PositiveIntegerField(
        default=60,
        validators=[MinValueValidator(1)],
        help_text="Seconds an answer without `ttl` is cached and valid.",
    )
    max_ttl = models.PositiveIntegerField(
        default=600,
        validators=[MinValueValidator(1), MaxValueValidator(86400)],
        help_text="The longest `ttl` an answer may set.",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    def __str__(self) -> str:
        return f"{self.tenant.slug}: {self.url}"
