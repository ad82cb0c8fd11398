"""Trusted issuers of a tenant: every write with its activity row."""

from __future__ import annotations

from django.db import transaction

from audit.models import EventType
from audit.services import activity_record
from realtime.db import on_commit
from realtime.jwks import ASYMMETRIC_ALGORITHMS, HMAC_ALGORITHMS
from realtime.layer import forget_send
from realtime.models import Tenant, TrustedIssuer


def trusted_issuer_add(
    *,
    tenant: Tenant,
    issuer: str,
    jwks_url: str = "",
    static_keys: str = "",
    hs_secret: str = "",
    algorithms: list[str] | None = None,
    audience: str = "",
    leeway: int = 0,
    sub_claim: str = "sub",
    role_claim: str = "role",
    default_role: str = "",
    copied_claims: list[str] | None = None,
    actor: str = "",
) -> TrustedIssuer:
    """Trust `issuer`'s tokens for `tenant`; algorithms default to the keys' kind."""
    if not algorithms:
        algorithms = list(HMAC_ALGORITHMS if hs_secret else ASYMMETRIC_ALGORITHMS)
    trusted = TrustedIssuer(
        tenant=tenant,
        issuer=issuer,
        jwks_url=jwks_url,
        static_keys=static_keys,
        hs_secret=hs_secret,
        algorithms=algorithms,
        audience=audience,
        leeway=leeway,
        sub_claim=sub_claim,
        role_claim=role_claim,
        default_role=default_role,
        copied_claims=copied_claims,
    )
    trusted.full_clean()
    with transaction.atomic():
        trusted.save()
        activity_record(
            event_type=EventType.ISSUER_ADDED,
            tenant=tenant,
            actor=actor,
            target=issuer,
            details={
                "id": trusted.pk,
                # Never the secret or the keys: only where they come from.
                "source": "jwks_url" if jwks_url else "static" if static_keys else "hs",
                "jwks_url": jwks_url,
                "algorithms": algorithms,
                "audience": audience,
            },
        )
        on_commit(forget_send, tenant=tenant.pk)
    return trusted


def trusted_issuer_save(*, issuer: TrustedIssuer, actor: str = "") -> TrustedIssuer:
    """Save an edited issuer (admin); the next token re-reads it."""
    issuer.full_clean()
    with transaction.atomic():
        issuer.save()
        activity_record(
            event_type=EventType.ISSUER_CHANGED,
            tenant=issuer.tenant,
            actor=actor,
            target=issuer.issuer,
            details={"id": issuer.pk, "algorithms": issuer.algorithms},
        )
        on_commit(forget_send, tenant=issuer.tenant_id)
    return issuer


def trusted_issuer_remove(*, issuer: TrustedIssuer, actor: str = "") -> None:
    """Stop trusting an issuer: its tokens fall to the tenant's secret, and fail."""
    with transaction.atomic():
        activity_record(
            event_type=EventType.ISSUER_REMOVED,
            tenant=issuer.tenant,
            actor=actor,
            target=issuer.issuer,
            details={"id": issuer.pk},
        )
        tenant_id = issuer.tenant_id
        issuer.delete()
        # Every process's socket path forgets the tenant's issuers at once.
        on_commit(forget_send, tenant=tenant_id)
