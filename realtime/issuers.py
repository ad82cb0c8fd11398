"""Tokens from a tenant's trusted issuers: which issuer, its keys, its claims.

A token whose unverified `iss` names one of the tenant's issuers is verified by
that issuer alone (the first by id, if several share the `iss`): its keys, its
algorithms, its `aud` and leeway. Failing there fails; nothing falls through to
another issuer or to the tenant's secret. A token naming no issuer of the tenant
is left to the tenant's own HS secret (realtime.auth). See README, "Identity".
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import time
from dataclasses import dataclass
from typing import Any

import jwt

from realtime import errors
from realtime.db import in_db
from realtime.jwks import (
    HMAC_ALGORITHMS,
    JwksUnavailable,
    PublicKey,
    key_cache,
    parse_static_keys,
)
from realtime.models import Tenant, TrustedIssuer
from realtime.roles import SERVICE_ROLE

MAX_EXP = 2**63 - 1
# Keys without a kid are tried in turn (static PEM keys); a cap on the work.
MAX_CANDIDATES = 5


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    role: str
    claims: dict[str, Any]
    exp: float


def issuer_matching(*, tenant: Tenant, token: str) -> TrustedIssuer | None:
    """The tenant's issuer named by the token's (unverified) `iss`, if any."""
    iss = unverified_iss(token)
    if iss is None:
        return None
    issuers = TrustedIssuer.objects.filter(tenant=tenant, issuer=iss)
    return issuers.order_by("id").first()


def issuer_keys_ready(*, issuer: TrustedIssuer, token: str) -> bool:
    """Can the token be verified without fetching anything (on the event loop)?

    Static keys and HMAC secrets always; a JWKS issuer when its keys, the
    token's `kid` among them, are cached and fresh.
    """
    if issuer.static_keys or issuer.is_symmetric or not issuer.jwks_url:
        return True
    _alg, kid = _header(token)
    return key_cache.ready((issuer.tenant_id, issuer.pk, issuer.jwks_url), kid=kid)


async def issuer_keys_warm(*, tenant: Tenant, token: str) -> None:
    """Fetch the JWKS a token will need before it is verified (sockets).

    Channels runs every `database_sync_to_async` call of a process on one
    shared thread: a JWKS fetch there (up to 5 s) would stall every socket's
    database work, of every tenant. So the socket path fetches here first, in
    the event loop's executor, and verification then finds the keys cached, or
    the failed attempt recorded. Errors are left for verification to report.
    """
    try:
        iss, (_alg, kid) = unverified_iss(token), _header(token)
    except errors.HeraldError:
        return
    if iss is None:
        return
    issuer = await in_db(_issuer_with_url, tenant_id=tenant.pk, iss=iss)
    if issuer is not None:
        cache_key = (issuer.tenant_id, issuer.pk, issuer.jwks_url)
        with contextlib.suppress(JwksUnavailable):
            await asyncio.to_thread(key_cache.keys, cache_key, kid=kid)


def _issuer_with_url(*, tenant_id: int, iss: str) -> TrustedIssuer | None:
    issuer = TrustedIssuer.objects.filter(tenant_id=tenant_id, issuer=iss)
    found = issuer.order_by("id").first()
    return found if found is not None and found.jwks_url else None


def issuer_token_verify(
    *, issuer: TrustedIssuer, token: str, now: float | None = None
) -> VerifiedToken:
    """Verify `token` with `issuer`'s keys and rules; map its claims.

    The caller still checks that the claims are plain JSON (auth.claims_problem).
    """
    alg, kid = _header(token)
    if alg not in issuer.algorithms:
        raise errors.TokenSignatureError(
            "Failed to validate JWT signature: "
            f"{alg[:16]} is not accepted from this issuer"
        )
    claims = _decode(issuer, token, alg, _candidates(issuer, alg, kid))
    exp = _expiry(claims, leeway=issuer.leeway, now=now)
    return _mapped(issuer, claims, exp)


def unverified_iss(token: str) -> str | None:
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError as exc:
        raise errors.MalformedToken() from exc
    iss = claims.get("iss")
    return iss if isinstance(iss, str) and iss else None


def _header(token: str) -> tuple[str, str | None]:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as exc:
        raise errors.MalformedToken() from exc
    alg, kid = header.get("alg"), header.get("kid")
    if not isinstance(alg, str) or not (kid is None or isinstance(kid, str)):
        raise errors.MalformedToken()
    return alg, kid


def _candidates(issuer: TrustedIssuer, alg: str, kid: str | None) -> list[Any]:
    """The keys that may verify a token with this alg and kid."""
    if issuer.is_symmetric:
        # validate_issuer_keys allows HMAC only here; checked again all the same.
        return [issuer.hs_secret] if alg in HMAC_ALGORITHMS else []
    if alg in HMAC_ALGORITHMS:
        return []  # a public key is never an HMAC secret
    keys = _issuer_keys(issuer, kid)
    return [
        key.key
        for key in keys
        if (kid is None or key.kid in (kid, None)) and key.verifies(alg)
    ][:MAX_CANDIDATES]


def _issuer_keys(issuer: TrustedIssuer, kid: str | None) -> list[PublicKey]:
    if issuer.static_keys:
        return _static_keys(issuer.static_keys)
    try:
        return key_cache.keys((issuer.tenant_id, issuer.pk, issuer.jwks_url), kid=kid)
    except JwksUnavailable as exc:
        raise errors.IssuerKeysUnavailable(
            f"Failed to generate JWT signer: {exc}"
        ) from exc


@functools.lru_cache(maxsize=256)
def _static_keys(text: str) -> list[PublicKey]:
    return parse_static_keys(text)


def _decode(
    issuer: TrustedIssuer, token: str, alg: str, keys: list[Any]
) -> dict[str, Any]:
    for key in keys:
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[alg],
                issuer=issuer.issuer,
                audience=issuer.audience or None,
                leeway=issuer.leeway,
                # exp is checked after, so the message can say how long ago.
                options={
                    "verify_exp": False,
                    "verify_aud": bool(issuer.audience),
                    "require": ["iss"],
                },
            )
        except jwt.InvalidSignatureError:
            continue
        except jwt.ImmatureSignatureError as exc:
            raise errors.TokenClaimInvalid("Token is not valid yet") from exc
        except (jwt.InvalidAudienceError, jwt.MissingRequiredClaimError) as exc:
            raise errors.TokenClaimInvalid("Token audience is not accepted") from exc
        except jwt.InvalidIssuerError as exc:
            raise errors.TokenClaimInvalid("Token issuer is not accepted") from exc
        except (jwt.InvalidKeyError, jwt.InvalidAlgorithmError) as exc:
            raise errors.TokenSignatureError() from exc
        except jwt.InvalidTokenError as exc:
            raise errors.MalformedToken() from exc
    raise errors.TokenSignatureError()


def _expiry(claims: dict[str, Any], *, leeway: int, now: float | None) -> float:
    exp = claims.get("exp")
    if exp is None:
        raise errors.TokenClaimsMissing()
    if (
        isinstance(exp, bool)
        or not isinstance(exp, int | float)
        or not math.isfinite(exp)
        or abs(exp) > MAX_EXP
    ):
        raise errors.TokenExpired("Token expiration time is invalid")
    lapsed = (now or time.time()) - exp
    if lapsed >= leeway:
        raise errors.TokenExpired(f"Token has expired {int(lapsed)} seconds ago")
    return exp


def _mapped(issuer: TrustedIssuer, claims: dict[str, Any], exp: float) -> VerifiedToken:
    """The claims policies see: the copied ones, with `sub` and `role` mapped."""
    role = claims.get(issuer.role_claim)
    if not isinstance(role, str) or not role:
        role = issuer.default_role
    if not role:
        raise errors.TokenClaimsMissing()
    if role == SERVICE_ROLE:
        # service_role bypasses row policies: only the tenant's own secret key
        # and secret-signed tokens may act as it, never an outside issuer.
        raise errors.TokenClaimInvalid(
            "A trusted issuer's token may not act as service_role"
        )
    names = issuer.copied_claims
    mapped = dict(claims) if not names else {n: claims[n] for n in names if n in claims}
    sub = claims.get(issuer.sub_claim)
    if isinstance(sub, str | int) and not isinstance(sub, bool):
        mapped["sub"] = str(sub)
    else:
        mapped.pop("sub", None)
    mapped.update(iss=issuer.issuer, role=role, exp=exp)
    if "ref" in claims:
        mapped["ref"] = claims["ref"]  # checked against the tenant by the caller
    return VerifiedToken(role=role, claims=mapped, exp=exp)
