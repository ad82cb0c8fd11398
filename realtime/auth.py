"""Resolving credentials into a principal: tenant, role and claims.

A credential is an API key (`pk_…` acts as `anon`, `sk_…` as `service_role`)
or a user JWT signed with the tenant's secret (HS256/384/512), or one from an
issuer the tenant trusts (realtime.issuers). Used as the
`apikey`, a JWT names its tenant in a `ref` claim. Wherever a token is
expected, one of the tenant's keys is accepted too and acts as that key.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote

import jwt

from realtime import errors
from realtime.bounds import MAX_JSON_DEPTH, too_deep
from realtime.issuers import (
    issuer_keys_ready,
    issuer_matching,
    issuer_token_verify,
    unverified_iss,
)
from realtime.keys import PREFIX_SHOWN, key_hash, looks_like_key
from realtime.models import ApiKey, Tenant, TrustedIssuer
from realtime.roles import SERVICE_ROLE

ALGORITHMS = ["HS256", "HS384", "HS512"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is acting, resolved once per connection or request."""

    tenant: Tenant
    role: str
    claims: Mapping[str, Any] = field(default_factory=dict)
    key_id: int | None = None
    key_prefix: str = ""
    exp: float | None = None
    # "connect" or "join" when the tenant's authorization callback answered
    # for it (realtime.auth_callback): its exp is then the answer's TTL.
    via_callback: str = ""

    @property
    def sub(self) -> str:
        sub = self.claims.get("sub")
        return "" if sub is None else str(sub)

    @property
    def is_service(self) -> bool:
        return self.role == SERVICE_ROLE

    @property
    def actor(self) -> str:
        if self.key_id is not None and not self.via_callback:
            return f"key:{self.key_prefix}"
        return f"user:{self.sub}" if self.sub else f"token:{self.role}"


def _clean(raw: str) -> str:
    # As Supabase: whitespace stripped and URL-decoded before verification.
    return unquote(raw.strip())


# Seconds a process's sockets trust a key (or a tenant found by its slug)
# they resolved, at most. A revocation or suspension reaches every process as
# an order (realtime.layer.disconnect_send), which empties the cache at once;
# this bounds how long a lost order is felt.
KEY_CACHE_TTL = 10.0
# Issuers change rarely and their services tell every process (forget_send):
# kept longer, so a storm's joins seldom find them missing all at once.
ISSUER_CACHE_TTL = 300.0


# Seconds a stale issuer entry still answers while one join re-reads it.
REFRESH_GRACE = 2.0


class KeyCache:
    """Keys and tenants this process's sockets resolved lately.

    A reconnect storm brings thousands of sockets with one publishable key:
    each read the key and its tenant from the database, one by one. With the
    cache, the first does. Only the socket path uses it, in a process whose
    hub listens for orders (realtime.hub forgets a revoked key or suspended
    tenant on the order); REST reads the database every time. A suspended
    tenant's keys are never kept, so a resumed tenant is not refused for long.
    """

    def __init__(
        self, ttl: float = KEY_CACHE_TTL, issuer_ttl: float = ISSUER_CACHE_TTL
    ) -> None:
        self.ttl, self.issuer_ttl = ttl, issuer_ttl
        self._keys: dict[str, tuple[float, Principal]] = {}
        self._tenants: dict[str, tuple[float, Tenant]] = {}
        # (tenant id, iss) -> the tenant's issuer of that name, or None
        self._issuers: dict[tuple[int, str], tuple[float, TrustedIssuer | None]] = {}
        self._refreshing: dict[tuple[int, str], float] = {}  # re-read since

    def key(self, digest: str) -> Principal | None:
        return self._fresh(self._keys, digest)

    def tenant(self, slug: str) -> Tenant | None:
        return self._fresh(self._tenants, slug)

    def keep_key(self, digest: str, principal: Principal) -> None:
        if principal.tenant.is_active:
            self._keys[digest] = (time.monotonic(), principal)

    def keep_tenant(self, tenant: Tenant) -> None:
        if tenant.is_active:
            self._tenants[tenant.slug] = (time.monotonic(), tenant)

    def issuer(self, tenant_id: int, iss: str) -> tuple[bool, TrustedIssuer | None]:
        """(known, the issuer or None): whether the tenant's issuer named `iss`
        was read lately, and what it was (None: the tenant has no such issuer).

        Once the entry is older than the TTL, one caller is told it is unknown
        (and reads the database, then `keep_issuer`); the joins arriving
        meanwhile keep using it for up to REFRESH_GRACE seconds more, instead
        of all going to the database thread at once.
        """
        name = (tenant_id, iss)
        entry = self._issuers.get(name)
        if entry is None:
            return False, None
        now = time.monotonic()
        ttl = self.issuer_ttl
        if now - entry[0] <= ttl:
            return True, entry[1]
        started = self._refreshing.get(name)
        if now - entry[0] > ttl + REFRESH_GRACE or (
            started is not None and now - started > REFRESH_GRACE
        ):
            self._issuers.pop(name, None)
            self._refreshing.pop(name, None)
            return False, None
        if started is None:
            self._refreshing[name] = now
            return False, None
        return True, entry[1]

    def keep_issuer(
        self, tenant_id: int, iss: str, issuer: TrustedIssuer | None
    ) -> None:
        self._issuers[tenant_id, iss] = (time.monotonic(), issuer)
        self._refreshing.pop((tenant_id, iss), None)

    def forget(
        self, *, key_id: int | None = None, tenant_id: int | None = None
    ) -> None:
        """A key revoked or a tenant suspended: never answer for them again."""
        for name in [n for n in self._issuers if n[0] == tenant_id]:
            self._issuers.pop(name, None)
            self._refreshing.pop(name, None)
        for digest, (_, found) in list(self._keys.items()):
            if found.key_id == key_id or found.tenant.pk == tenant_id:
                self._keys.pop(digest, None)
        for slug, (_, tenant) in list(self._tenants.items()):
            if tenant.pk == tenant_id:
                self._tenants.pop(slug, None)

    def _fresh(self, entries: dict[str, tuple[float, Any]], name: str) -> Any:
        entry = entries.get(name)
        if entry is None:
            return None
        if time.monotonic() - entry[0] > self.ttl:
            entries.pop(name, None)
            return None
        return entry[1]


def _key_principal(raw: str, keys: KeyCache | None = None) -> Principal:
    digest = key_hash(raw)
    if keys is not None and (found := keys.key(digest)) is not None:
        return found
    principal = _key_principal_read(raw, digest)
    if keys is not None:
        keys.keep_key(digest, principal)
    return principal


def _key_principal_read(raw: str, digest: str) -> Principal:
    key = (
        # The tenant's callback comes along: a socket must not query for it
        # from the event loop (realtime.auth_callback.callback_config_of).
        ApiKey.objects.select_related("tenant", "tenant__auth_callback")
        .filter(key_hash=digest, revoked_at__isnull=True)
        .first()
    )
    if key is None:
        raise errors.InvalidKey()
    return Principal(
        tenant=key.tenant,
        role=key.role,
        claims={"role": key.role},
        key_id=key.pk,
        key_prefix=raw[:PREFIX_SHOWN],
    )


def token_claims(
    token: str, *, secret: str, now: float | None = None
) -> dict[str, Any]:
    """Verify a tenant-signed JWT; raise the Supabase-worded error if it fails."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=ALGORITHMS,
            # exp is checked below so the message can say how long ago it lapsed.
            options={"verify_exp": False, "verify_aud": False, "verify_iat": False},
        )
    except jwt.InvalidSignatureError as exc:
        raise errors.TokenSignatureError() from exc
    except jwt.InvalidTokenError as exc:
        raise errors.MalformedToken() from exc
    role, exp = claims.get("role"), claims.get("exp")
    if not isinstance(role, str) or not role or exp is None:
        raise errors.TokenClaimsMissing()
    if not _is_time(exp):
        raise errors.TokenExpired("Token expiration time is invalid")
    if problem := claims_problem(claims):
        raise errors.MalformedToken(f"The token's claims are not plain JSON: {problem}")
    lapsed = int((now or time.time()) - exp)
    if lapsed >= 0:
        raise errors.TokenExpired(f"Token has expired {lapsed} seconds ago")
    return claims


def _is_time(exp: object) -> bool:
    # Python's json reads 1e400, Infinity and NaN as floats: numbers, no time.
    if isinstance(exp, float):
        return math.isfinite(exp)
    return isinstance(exp, int) and not isinstance(exp, bool)


# What orjson writes; claims travel in frames and layer messages it encodes.
JSON_INT_RANGE = range(-(2**63), 2**64)


def claims_problem(claims: dict[str, Any]) -> str | None:
    """Why the claims could not be sent as they are, or None.

    Python's json reads what orjson will not write (integers past 64 bits)
    or writes as null (NaN, infinities), and any depth: such a token would
    pass here and fail later, in the middle of a delivery.
    """
    if too_deep(claims):
        return f"nested deeper than {MAX_JSON_DEPTH} levels"
    stack: list[object] = [claims]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, float) and not math.isfinite(value):
            return "a number is not finite"
        elif isinstance(value, int) and value not in JSON_INT_RANGE:
            return "an integer does not fit in 64 bits"
    return None


def _unverified_ref(token: str) -> str:
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError as exc:
        raise errors.MalformedToken() from exc
    ref = claims.get("ref")
    if not isinstance(ref, str) or not ref:
        raise errors.InvalidKey(
            "A token used as the apikey must name its tenant in `ref`"
        )
    return ref


def _token_principal(
    tenant: Tenant, token: str, keys: KeyCache | None = None
) -> Principal:
    # A token naming one of the tenant's trusted issuers in `iss` is that
    # issuer's to verify (realtime.issuers); any other, the tenant's secret's.
    iss = unverified_iss(token)
    known, issuer = keys.issuer(tenant.pk, iss) if keys and iss else (False, None)
    if iss is not None and not known:
        issuer = issuer_matching(tenant=tenant, token=token)
        if keys is not None:
            keys.keep_issuer(tenant.pk, iss, issuer)
    if issuer is not None:
        return _issuer_principal(tenant, issuer, token)
    return _secret_principal(tenant, token)


def _issuer_principal(tenant: Tenant, issuer: TrustedIssuer, token: str) -> Principal:
    claims = issuer_token_verify(issuer=issuer, token=token).claims
    if problem := claims_problem(claims):
        raise errors.MalformedToken(f"The token's claims are not plain JSON: {problem}")
    return _claims_principal(tenant, claims)


def _secret_principal(tenant: Tenant, token: str) -> Principal:
    """A token signed with the tenant's own secret."""
    return _claims_principal(tenant, token_claims(token, secret=tenant.jwt_secret))


def _claims_principal(tenant: Tenant, claims: dict[str, Any]) -> Principal:
    ref = claims.get("ref")
    if ref is not None and ref != tenant.slug:
        raise errors.InvalidKey("The token belongs to another tenant")
    return Principal(
        tenant=tenant, role=claims["role"], claims=claims, exp=claims["exp"]
    )


def _ensure_active(tenant: Tenant) -> None:
    if not tenant.is_active:
        raise errors.TenantSuspended()


def principal_from_apikey(
    raw: str | None, *, keys: KeyCache | None = None
) -> Principal:
    """The `apikey` alone: a key, or a JWT whose `ref` names its tenant.

    `keys`: a socket path's cache of what was read before (KeyCache).
    """
    if not raw or not raw.strip():
        raise errors.MissingKey()
    raw = _clean(raw)
    if looks_like_key(raw):
        principal = _key_principal(raw, keys)
    else:
        principal = _token_principal(
            _tenant_named(_unverified_ref(raw), keys), raw, keys
        )
    _ensure_active(principal.tenant)
    return principal


def _tenant_named(slug: str, keys: KeyCache | None) -> Tenant:
    tenant = keys.tenant(slug) if keys is not None else None
    if tenant is None:
        tenant = Tenant.objects.filter(slug=slug).first()
        if tenant is None:
            raise errors.InvalidKey()
        if keys is not None:
            keys.keep_tenant(tenant)
    return tenant


def principal_offline(
    tenant: Tenant, raw: str, *, keys: KeyCache | None = None
) -> Principal | None:
    """`principal_for_tenant` without the database, or None where it needs it:
    a key that is not cached, a token naming an issuer (the tenant's trusted
    issuers are read). A token signed with the tenant's own secret is checked
    here alone, on the event loop, with no hop to the database thread.
    Raises as `principal_for_tenant` does."""
    raw = _clean(raw)
    if not raw:
        raise errors.MalformedToken()
    if looks_like_key(raw):
        found = keys.key(key_hash(raw)) if keys is not None else None
        if found is not None and found.tenant.pk != tenant.pk:
            raise errors.InvalidKey("The key belongs to another tenant")
        return found
    iss = unverified_iss(raw)
    if iss is None:
        return _secret_principal(tenant, raw)
    known, issuer = keys.issuer(tenant.pk, iss) if keys is not None else (False, None)
    if not known:
        return None  # the tenant's issuers are read from the database
    if issuer is None:
        return _secret_principal(tenant, raw)
    if not issuer_keys_ready(issuer=issuer, token=raw):
        return None  # its JWKS must be fetched first, off the event loop
    return _issuer_principal(tenant, issuer, raw)


def principal_for_tenant(
    tenant: Tenant, raw: str, *, keys: KeyCache | None = None
) -> Principal:
    """A token (or key) presented within a tenant already known from the apikey."""
    raw = _clean(raw)
    if not raw:
        raise errors.MalformedToken()
    if looks_like_key(raw):
        principal = _key_principal(raw, keys)
        if principal.tenant.pk != tenant.pk:
            raise errors.InvalidKey("The key belongs to another tenant")
        return principal
    return _token_principal(tenant, raw, keys)


# Each socket resolves its key from the database, which loads a Tenant of its
# own (about 2 KB): thousands of sockets of one tenant share one per process
# instead, replaced by a fresher copy after this many seconds.
SHARED_TENANT_TTL = 30.0
_shared_tenants: dict[int, tuple[float, Tenant]] = {}


def _same_settings(a: Tenant, b: Tenant) -> bool:
    return all(
        getattr(a, f.attname) == getattr(b, f.attname)
        for f in Tenant._meta.concrete_fields
    )


def principal_shared(principal: Principal) -> Principal:
    """The same principal, holding this process's shared copy of its tenant.

    The principal's own copy was just read from the database: when it differs
    from the shared one (a rotated JWT secret, new limits), it replaces it, so
    a socket never verifies tokens against a secret that was rotated away.
    """
    now = time.monotonic()
    entry = _shared_tenants.get(principal.tenant.pk)
    if (
        entry is None
        or now - entry[0] > SHARED_TENANT_TTL
        or not _same_settings(entry[1], principal.tenant)
    ):
        _shared_tenants[principal.tenant.pk] = (now, principal.tenant)
        return principal
    return replace(principal, tenant=entry[1])


def shared_tenant_forget(tenant_id: int) -> None:
    """Drop the shared copy: an order for the tenant means its row changed
    (private_only, suspension), and new sockets must not get the old one."""
    _shared_tenants.pop(tenant_id, None)


def principal_resolve(*, apikey: str | None, bearer: str | None = None) -> Principal:
    """An `apikey` plus an optional bearer token: the bearer decides the role."""
    principal = principal_from_apikey(apikey)
    if bearer:
        principal = principal_for_tenant(principal.tenant, bearer)
    return principal


def token_mint(
    *,
    tenant: Tenant,
    role: str,
    sub: str | None = None,
    claims: Mapping[str, Any] | None = None,
    ttl: int,
) -> str:
    """A user token signed with the tenant's secret, naming the tenant in `ref`."""
    now = int(time.time())
    payload: dict[str, Any] = {**(claims or {}), "role": role, "ref": tenant.slug}
    payload.update(iat=now, exp=now + ttl)
    if sub is not None:
        payload["sub"] = sub
    return jwt.encode(payload, tenant.jwt_secret, algorithm="HS256")
