"""Validators shared by models, services and serializers."""

import re

from django.core.exceptions import ValidationError

from realtime.jwks import (
    ASYMMETRIC_ALGORITHMS,
    HMAC_ALGORITHMS,
    KeysInvalid,
    parse_static_keys,
)

# A plain SQL identifier: what a table or column name may be. Anything else
# (quotes, dots, spaces) is refused rather than escaped.
# \A and \Z, never ^ and $: `$` would also take a trailing newline.
IDENTIFIER_RE = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]{0,62}\Z")
SLUG_RE = re.compile(r"\A[a-z0-9][a-z0-9-]{0,62}\Z")


def is_identifier(value: object) -> bool:
    return isinstance(value, str) and IDENTIFIER_RE.match(value) is not None


def validate_identifier(value: str) -> None:
    if not is_identifier(value):
        raise ValidationError(
            "%(value)r is not a plain identifier (letters, digits, underscore).",
            code="invalid_identifier",
            params={"value": value},
        )


def validate_rules(value: object) -> None:
    """Row-policy rules: a list of {"column": identifier, "claim": name}.

    `"any": true` makes a membership rule: the row's column is one of the
    values of a list claim.
    """
    if not isinstance(value, list):
        raise ValidationError("Rules must be a list.", code="invalid_rules")
    for rule in value:
        if not (
            isinstance(rule, dict)
            and set(rule) in ({"column", "claim"}, {"column", "claim", "any"})
            and is_identifier(rule["column"])
            and isinstance(rule["claim"], str)
            and rule["claim"]
            and rule.get("any", True) is True
        ):
            raise ValidationError(
                'Each rule must be {"column": <identifier>, "claim": <name>}, '
                'with "any": true for a list claim.',
                code="invalid_rules",
            )


def validate_algorithms(value: object) -> None:
    """An issuer's allow-list: known JWS algorithms, never `none`."""
    known = (*ASYMMETRIC_ALGORITHMS, *HMAC_ALGORITHMS)
    if not (
        isinstance(value, list)
        and value
        and all(isinstance(alg, str) and alg in known for alg in value)
    ):
        raise ValidationError(
            "Algorithms must be a non-empty list drawn from %(known)s.",
            code="invalid_algorithms",
            params={"known": ", ".join(known)},
        )


def validate_claim_names(value: object) -> None:
    if value is not None and not (
        isinstance(value, list) and all(isinstance(c, str) and c for c in value)
    ):
        raise ValidationError("Claims must be a list of names.", code="invalid_claims")


MIN_HS_SECRET_LENGTH = 32


def validate_issuer_keys(
    *, jwks_url: str, static_keys: str, hs_secret: str, algorithms: list[str]
) -> None:
    """One key source, and algorithms that fit it: HMAC only with a secret."""
    if sum(map(bool, (jwks_url, static_keys, hs_secret))) != 1:
        raise ValidationError(
            "Give exactly one of a JWKS URL, static keys or an HS secret.",
            code="invalid_issuer_keys",
        )
    hmac = [alg for alg in algorithms if alg in HMAC_ALGORITHMS]
    if hs_secret and len(hmac) != len(algorithms):
        raise ValidationError(
            "An HS secret verifies HS256/384/512 only.", code="invalid_algorithms"
        )
    if not hs_secret and hmac:
        raise ValidationError(
            "HMAC algorithms need an HS secret, never public keys.",
            code="invalid_algorithms",
        )
    if hs_secret and len(hs_secret.encode()) < MIN_HS_SECRET_LENGTH:
        raise ValidationError(
            "An HS secret must be at least 32 bytes.", code="invalid_issuer_keys"
        )
    if jwks_url and not jwks_url.startswith(("https://", "http://")):
        raise ValidationError("The JWKS URL must be http(s).", code="invalid_url")
    if static_keys:
        try:
            parse_static_keys(static_keys)
        except KeysInvalid as exc:
            raise ValidationError(str(exc), code="invalid_issuer_keys") from exc


RATE_RE = re.compile(r"^[0-9]+/[0-9]*[smhd]$")
RATE_SCOPES = frozenset(
    {"default", "read", "publish", "subscribe", "tokens", "broadcast"}
)


def validate_rate_limits(value: object) -> None:
    """Per-tenant REST limits: {scope: "<count>/<period>"} (django-ratelimit rates)."""
    if not isinstance(value, dict):
        raise ValidationError("Rate limits must be an object.", code="invalid_rates")
    for scope, rate in value.items():
        if scope not in RATE_SCOPES or not (
            isinstance(rate, str) and RATE_RE.match(rate)
        ):
            raise ValidationError(
                "Each limit must be one of %(scopes)s mapped to a rate like "
                '"10/m" (s, m, h, d; "100/5m" for a five-minute window).',
                code="invalid_rates",
                params={"scopes": ", ".join(sorted(RATE_SCOPES))},
            )
