"""Admin for operators: tenants, keys, issuers, policies, and the change log."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from realtime import errors
from realtime.capture.services import table_check, table_track, table_untrack
from realtime.models import (
    ApiKey,
    AuthCallback,
    ChannelPolicy,
    LiveUpdate,
    RecordVersion,
    RowPolicy,
    Tenant,
    TrackedTable,
    TrustedIssuer,
)
from realtime.services.auth_callbacks import (
    auth_callback_remove,
    auth_callback_save,
)
from realtime.services.issuers import trusted_issuer_remove, trusted_issuer_save
from realtime.services.policies import policy_delete, policy_save
from realtime.services.tenants import (
    api_key_create,
    api_key_revoke,
    tenant_create,
    tenant_jwt_secret_rotate,
    tenant_private_only_set,
    tenant_resume,
    tenant_suspend,
    tenant_update,
)


def staff_actor(request: HttpRequest) -> str:
    return f"staff:{request.user.get_username()}"


class ApiKeyInline(admin.TabularInline):
    model = ApiKey
    fields = readonly_fields = ("prefix", "kind", "name", "created_at", "revoked_at")
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class RowPolicyInline(admin.TabularInline):
    # Read-only here: edits go through the policy's own page, whose saves and
    # deletes are logged by the service.
    model = RowPolicy
    fields = readonly_fields = ("table", "role", "rules")
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class PolicyAdmin(admin.ModelAdmin):
    """Saves and deletes through realtime.services.policies, with activity rows."""

    def save_model(
        self, request: HttpRequest, obj: Any, form: Any, change: bool
    ) -> None:
        policy_save(policy=obj, actor=staff_actor(request))

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        policy_delete(policy=obj, actor=staff_actor(request))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        for policy in queryset:
            policy_delete(policy=policy, actor=staff_actor(request))


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "is_active", "private_only", "created_at"]
    list_filter = ["is_active", "private_only"]
    search_fields = ["slug", "name"]
    # Suspension goes through its actions: they close the tenant's sockets.
    # So is private_only: changing it closes the sockets (they hold the old value).
    readonly_fields = ["created_at", "is_active", "private_only"]
    inlines = [ApiKeyInline, RowPolicyInline]
    actions = [
        "suspend",
        "resume",
        "private_channels_only",
        "public_channels_too",
        "rotate_jwt_secret",
    ]

    def get_inlines(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.inlines if obj is not None else []

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        # Adding asks for the name and slug only: tenant_create makes the
        # secret and the keys, shown once.
        if obj is None:
            return [(None, {"fields": ["name", "slug"]})]
        return self.fieldsets

    def save_model(
        self, request: HttpRequest, obj: Tenant, form: Any, change: bool
    ) -> None:
        """Through the services, as the API and the commands: logged."""
        actor = staff_actor(request)
        if not change:
            created = tenant_create(name=obj.name, slug=obj.slug, actor=actor)
            obj.pk = created.tenant.pk
            self.message_user(
                request,
                "Keys (shown once, copy them now): publishable "
                f"{created.publishable_key}, secret {created.secret_key}",
                level=messages.WARNING,
            )
            return
        before = Tenant.objects.get(pk=obj.pk)
        changes = {name: getattr(obj, name) for name in form.changed_data}
        tenant_update(tenant=before, changes=changes, actor=actor)

    @admin.action(description="Rotate the JWT secret (closes their sockets)")
    def rotate_jwt_secret(
        self, request: HttpRequest, queryset: QuerySet[Tenant]
    ) -> None:
        for tenant in queryset:
            rotated = tenant_jwt_secret_rotate(
                tenant=tenant, actor=staff_actor(request)
            )
            self.message_user(
                request,
                f"New JWT secret of {rotated.slug} (shown once): {rotated.jwt_secret}",
                level=messages.WARNING,
            )

    @admin.action(description="Suspend: close their sockets, refuse new ones")
    def suspend(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        for tenant in queryset.filter(is_active=True):
            tenant_suspend(tenant=tenant, actor=staff_actor(request))

    @admin.action(description="Resume")
    def resume(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        for tenant in queryset.filter(is_active=False):
            tenant_resume(tenant=tenant, actor=staff_actor(request))

    @admin.action(description="Private only: refuse public channels (PrivateOnly)")
    def private_channels_only(
        self, request: HttpRequest, queryset: QuerySet[Tenant]
    ) -> None:
        for tenant in queryset.filter(private_only=False):
            tenant_private_only_set(
                tenant=tenant, private_only=True, actor=staff_actor(request)
            )

    @admin.action(description="Allow public channels again")
    def public_channels_too(
        self, request: HttpRequest, queryset: QuerySet[Tenant]
    ) -> None:
        for tenant in queryset.filter(private_only=True):
            tenant_private_only_set(
                tenant=tenant, private_only=False, actor=staff_actor(request)
            )

    fieldsets = [
        (
            None,
            {
                "fields": [
                    "slug",
                    "name",
                    "is_active",
                    "private_only",
                    "created_at",
                ]
            },
        ),
        (
            "Limits",
            {
                "fields": [
                    "max_concurrent_users",
                    "max_connections_per_user",
                    "max_channels_per_client",
                    "max_joins_per_second",
                    "max_events_per_second",
                    "max_presence_events_per_second",
                    "max_payload_size_kb",
                    "change_retention_hours",
                    "broadcast_retention_hours",
                    "change_feeds",
                    "rate_limits",
                ]
            },
        ),
    ]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["prefix", "tenant", "kind", "name", "created_at", "revoked_at"]
    list_filter = ["kind", "tenant"]
    search_fields = ["prefix", "name", "tenant__slug"]
    fields = ("tenant", "kind", "name", "prefix", "created_at", "revoked_at")
    readonly_fields = ["prefix", "created_at", "revoked_at"]
    actions = ["revoke"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # A key is immutable once issued; only revocation changes it.
        return list(self.fields if obj else self.readonly_fields)

    def save_model(
        self, request: HttpRequest, obj: ApiKey, form: Any, change: bool
    ) -> None:
        if change:
            return
        key, raw = api_key_create(
            tenant=obj.tenant, kind=obj.kind, name=obj.name, actor=staff_actor(request)
        )
        obj.pk = key.pk
        self.message_user(
            request,
            f"New key (shown once, copy it now): {raw}",
            level=messages.WARNING,
        )

    @admin.action(description="Revoke selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for key in queryset.filter(revoked_at__isnull=True):
            api_key_revoke(key=key, actor=staff_actor(request))


@admin.register(RowPolicy)
class RowPolicyAdmin(PolicyAdmin):
    list_display = ["tenant", "table", "role", "rules", "created_at"]
    list_filter = ["tenant", "role"]
    search_fields = ["table", "tenant__slug"]


class TrustedIssuerForm(forms.ModelForm):
    jwks_url = forms.URLField(required=False, max_length=500, assume_scheme="https")
    # Write-only: the secret is never rendered back; left blank, it is kept.
    hs_secret = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Write-only. Leave blank to keep the current secret.",
    )

    class Meta:
        model = TrustedIssuer
        fields = [
            "tenant",
            "issuer",
            "jwks_url",
            "static_keys",
            "hs_secret",
            "algorithms",
            "audience",
            "leeway",
            "sub_claim",
            "role_claim",
            "default_role",
            "copied_claims",
        ]

    def clean_hs_secret(self) -> str:
        new = self.cleaned_data.get("hs_secret") or ""
        return new or (self.instance.hs_secret if self.instance.pk else "")


@admin.register(TrustedIssuer)
class TrustedIssuerAdmin(admin.ModelAdmin):
    form = TrustedIssuerForm
    list_display = ["tenant", "issuer", "source", "algorithms", "audience"]
    list_filter = ["tenant"]
    search_fields = ["issuer", "tenant__slug"]

    @admin.display(description="keys")
    def source(self, obj: TrustedIssuer) -> str:
        if obj.jwks_url:
            return obj.jwks_url
        return "HS secret" if obj.hs_secret else "static keys"

    def save_model(
        self, request: HttpRequest, obj: TrustedIssuer, form: Any, change: bool
    ) -> None:
        trusted_issuer_save(issuer=obj, actor=staff_actor(request))

    def delete_model(self, request: HttpRequest, obj: TrustedIssuer) -> None:
        trusted_issuer_remove(issuer=obj, actor=staff_actor(request))

    def delete_queryset(
        self, request: HttpRequest, queryset: QuerySet[TrustedIssuer]
    ) -> None:
        for issuer in queryset:
            trusted_issuer_remove(issuer=issuer, actor=staff_actor(request))


class AuthCallbackForm(forms.ModelForm):
    url = forms.URLField(max_length=500, assume_scheme="https")

    class Meta:
        model = AuthCallback
        fields = ["tenant", "url", "on_join", "timeout", "default_ttl", "max_ttl"]


@admin.register(AuthCallback)
class AuthCallbackAdmin(admin.ModelAdmin):
    """The signing secret is made when the callback is added and shown in
    that one message; never again (`set_auth_callback --rotate-secret`)."""

    form = AuthCallbackForm
    list_display = ["tenant", "url", "on_join", "timeout", "max_ttl"]
    search_fields = ["url", "tenant__slug"]

    def save_model(
        self, request: HttpRequest, obj: AuthCallback, form: Any, change: bool
    ) -> None:
        fresh = not obj.secret
        auth_callback_save(callback=obj, actor=staff_actor(request))
        if fresh:
            self.message_user(
                request,
                f"Signing secret (shown once, copy it now): {obj.secret}",
                level=messages.WARNING,
            )

    def delete_model(self, request: HttpRequest, obj: AuthCallback) -> None:
        auth_callback_remove(callback=obj, actor=staff_actor(request))

    def delete_queryset(
        self, request: HttpRequest, queryset: QuerySet[AuthCallback]
    ) -> None:
        for callback in queryset:
            auth_callback_remove(callback=callback, actor=staff_actor(request))


@admin.register(ChannelPolicy)
class ChannelPolicyAdmin(PolicyAdmin):
    list_display = ["tenant", "pattern", "role", "extension", "read", "write"]
    list_filter = ["tenant", "extension", "read", "write"]
    search_fields = ["pattern", "tenant__slug"]


@admin.register(LiveUpdate)
class LiveUpdateAdmin(admin.ModelAdmin):
    list_display = ["id", "tenant", "table", "type", "commit_timestamp"]
    list_filter = ["type", "tenant"]
    search_fields = ["table"]
    date_hierarchy = "commit_timestamp"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(RecordVersion)
class RecordVersionAdmin(admin.ModelAdmin):
    """Last-write-wins state per record, and how many stale changes it refused."""

    list_display = [
        "tenant",
        "table",
        "pk_value",
        "updated_at",
        "device_id",
        "seq",
        "conflicts",
    ]
    list_filter = ["tenant", "table"]
    search_fields = ["table", "pk_value", "device_id"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class TrackedTableForm(forms.ModelForm):
    """Start capturing a table: the checks track_table makes, as form errors."""

    class Meta:
        model = TrackedTable
        fields = ["db_table", "tenant_kind", "tenant_value", "exclude"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("tenant_kind") == TrackedTable.TenantKind.ID:
            raise forms.ValidationError(
                "A tenant id column is for Django models: use track() in the app."
            )
        try:
            table_check(
                data.get("db_table", ""),
                data.get("tenant_kind", ""),
                data.get("tenant_value", ""),
                data.get("exclude") or [],
            )
        except errors.InvalidInput as exc:
            raise forms.ValidationError(exc.message) from exc
        return data


@admin.register(TrackedTable)
class TrackedTableAdmin(admin.ModelAdmin):
    """Tables whose writes the database records; adding one installs triggers."""

    form = TrackedTableForm
    list_display = [
        "db_table",
        "table",
        "tenant_kind",
        "tenant_value",
        "source",
        "skipped",
        "last_skipped_at",
        "created_at",
    ]
    list_filter = ["source", "tenant_kind"]
    actions = ["untrack"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # untrack, then track again

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the action drops the triggers too

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def save_model(
        self, request: HttpRequest, obj: TrackedTable, form: Any, change: bool
    ) -> None:
        fixed = obj.tenant_kind == TrackedTable.TenantKind.FIXED
        tracked = table_track(
            db_table=obj.db_table,
            tenant_slug=obj.tenant_value if fixed else None,
            tenant_column=None if fixed else obj.tenant_value,
            exclude=obj.exclude or [],
            actor=staff_actor(request),
        )
        obj.pk = tracked.pk

    @admin.action(description="Stop tracking (drop the triggers)")
    def untrack(self, request: HttpRequest, queryset: QuerySet[TrackedTable]) -> None:
        models_ = [t.db_table for t in queryset if t.source == t.Source.MODEL]
        if models_:
            self.message_user(
                request,
                f"{', '.join(models_)}: tracked by track() in code; remove it there.",
                level=messages.WARNING,
            )
        for tracked in queryset.exclude(source=TrackedTable.Source.MODEL):
            table_untrack(db_table=tracked.db_table, actor=staff_actor(request))
