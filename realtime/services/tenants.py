"""Tenants, their keys and row policies: every write with its activity row."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from audit.models import EventType
from audit.services import activity_record
from realtime.db import on_commit
from realtime.errors import TenantSuspended
from realtime.keys import PREFIX_SHOWN, jwt_secret_generate, key_generate, key_hash
from realtime.layer import disconnect_send
from realtime.models import ApiKey, RowPolicy, Tenant
from realtime.services.policies import policy_save


@dataclass(frozen=True, slots=True)
class TenantCredentials:
    """What is shown once, when a tenant is created."""

    tenant: Tenant
    publishable_key: str
    secret_key: str


def tenant_create(
    *, name: str, slug: str | None = None, actor: str = "", ip: str | None = None
) -> TenantCredentials:
    """A tenant with a fresh JWT secret, one publishable and one secret key."""
    tenant = Tenant(
        name=name, slug=slug or slugify(name)[:63], jwt_secret=jwt_secret_generate()
    )
    tenant.full_clean()
    with transaction.atomic():
        try:
            with transaction.atomic():
                tenant.save()
        except IntegrityError as exc:
            # The same slug, created between full_clean() and here.
            raise ValidationError({"slug": "A tenant with this slug exists."}) from exc
        activity_record(
            event_type=EventType.TENANT_CREATED, tenant=tenant, actor=actor, ip=ip
        )
        _, publishable = api_key_create(
            tenant=tenant, kind=ApiKey.Kind.PUBLISHABLE, actor=actor, ip=ip
        )
        _, secret = api_key_create(
            tenant=tenant, kind=ApiKey.Kind.SECRET, actor=actor, ip=ip
        )
    return TenantCredentials(
        tenant=tenant, publishable_key=publishable, secret_key=secret
    )


def api_key_create(
    *,
    tenant: Tenant,
    kind: str,
    name: str = "",
    actor: str = "",
    ip: str | None = None,
) -> tuple[ApiKey, str]:
    """A new key; the raw value is returned once and never stored."""
    raw = key_generate(secret=kind == ApiKey.Kind.SECRET)
    with transaction.atomic():
        key = ApiKey.objects.create(
            tenant=tenant,
            kind=kind,
            name=name,
            prefix=raw[:PREFIX_SHOWN],
            key_hash=key_hash(raw),
        )
        activity_record(
            event_type=EventType.KEY_CREATED,
            tenant=tenant,
            actor=actor,
            target=key.prefix,
            ip=ip,
            details={"kind": kind, "name": name},
        )
    return key, raw


def api_key_revoke(*, key: ApiKey, actor: str = "", ip: str | None = None) -> ApiKey:
    """Revoke a key: it no longer authenticates anything; its sockets close now."""
    with transaction.atomic():
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
        activity_record(
            event_type=EventType.KEY_REVOKED,
            tenant=key.tenant,
            actor=actor,
            target=key.prefix,
            ip=ip,
        )
        reason = "Unauthorized: The API key was revoked"
        on_commit(disconnect_send, key=key.pk, reason=reason)
    return key


def tenant_suspend(*, tenant: Tenant, actor: str = "", ip: str | None = None) -> Tenant:
    """Turn Realtime off for a tenant: its sockets close, new ones are refused."""
    with transaction.atomic():
        tenant.is_active = False
        tenant.save(update_fields=["is_active"])
        activity_record(
            event_type=EventType.TENANT_SUSPENDED, tenant=tenant, actor=actor, ip=ip
        )
        reason = TenantSuspended().reason
        on_commit(disconnect_send, tenant=tenant.pk, reason=reason)
    return tenant


def tenant_resume(*, tenant: Tenant, actor: str = "", ip: str | None = None) -> Tenant:
    with transaction.atomic():
        tenant.is_active = True
        tenant.save(update_fields=["is_active"])
        activity_record(
            event_type=EventType.TENANT_RESUMED, tenant=tenant, actor=actor, ip=ip
        )
    return tenant


# Changing one of these closes the tenant's sockets, as Supabase's tenant update
# does: a socket admitted under the old setting must not keep it. Fields a
# branch does not have are simply never changed.
FIELDS_CLOSING_SOCKETS = frozenset({"private_only"})
JWT_SECRET_ROTATED_REASON = (
    "Unauthorized: The tenant's JWT secret was rotated; "
    "reconnect with a token signed with the new secret"
)


def tenant_update(
    *,
    tenant: Tenant,
    changes: dict[str, Any],
    actor: str = "",
    ip: str | None = None,
) -> Tenant:
    """Change a tenant's settings (limits, retention, name...), validated whole."""
    before = {field: getattr(tenant, field) for field in changes}
    for field, value in changes.items():
        setattr(tenant, field, value)
    tenant.full_clean()
    changed = {f: [before[f], changes[f]] for f in changes if before[f] != changes[f]}
    if not changed:
        return tenant
    with transaction.atomic():
        tenant.save(update_fields=list(changed))
        activity_record(
            event_type=EventType.TENANT_UPDATED,
            tenant=tenant,
            actor=actor,
            ip=ip,
            details={"changed": changed},
        )
        if FIELDS_CLOSING_SOCKETS & changed.keys():
            reason = "Unauthorized: The tenant's settings changed; reconnect"
            on_commit(disconnect_send, tenant=tenant.pk, reason=reason)
    return tenant


def tenant_jwt_secret_rotate(
    *, tenant: Tenant, actor: str = "", ip: str | None = None
) -> Tenant:
    """A new JWT secret: tokens signed with the old one stop working now.

    Every socket of the tenant is closed (Supabase disconnects a tenant's
    sockets when its secret changes); clients reconnect with their key and
    join with tokens signed with the new secret.
    """
    with transaction.atomic():
        tenant.jwt_secret = jwt_secret_generate()
        tenant.save(update_fields=["jwt_secret"])
        activity_record(
            event_type=EventType.JWT_SECRET_ROTATED, tenant=tenant, actor=actor, ip=ip
        )
        on_commit(disconnect_send, tenant=tenant.pk, reason=JWT_SECRET_ROTATED_REASON)
    return tenant


def tenant_private_only_set(
    *, tenant: Tenant, private_only: bool, actor: str = ""
) -> Tenant:
    """Allow only private channels, or public ones again.

    The tenant's sockets are closed (on commit), as Supabase disconnects them
    when `private_only` changes: a socket holds the tenant as it was when it
    connected, so only a reconnect sees the new setting.
    """
    with transaction.atomic():
        tenant.private_only = private_only
        tenant.save(update_fields=["private_only"])
        activity_record(
            event_type=EventType.POLICY_CHANGED,
            tenant=tenant,
            actor=actor,
            target="private_only",
            details={"private_only": private_only},
        )
        reason = (
            "The project's settings changed (private_only is now "
            f"{'on' if private_only else 'off'}): connect again"
        )
        on_commit(disconnect_send, tenant=tenant.pk, reason=reason)
    return tenant


def row_policy_add(
    *,
    tenant: Tenant,
    table: str,
    role: str,
    rules: list[dict[str, Any]],
    actor: str = "",
) -> RowPolicy:
    """Let `role` see the rows of `table` where every rule holds (row_policy)."""
    policy = RowPolicy(tenant=tenant, table=table, role=role, rules=rules)
    policy_save(policy=policy, actor=actor)
    return policy
