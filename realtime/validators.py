"""Validators shared by models, services and serializers."""

import re

from django.core.exceptions import ValidationError

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
    """Row-policy rules: a list of {"column": identifier, "claim": name}."""
    if not isinstance(value, list):
        raise ValidationError("Rules must be a list.", code="invalid_rules")
    for rule in value:
        if not (
            isinstance(rule, dict)
            and set(rule) == {"column", "claim"}
            and is_identifier(rule["column"])
            and isinstance(rule["claim"], str)
            and rule["claim"]
        ):
            raise ValidationError(
                'Each rule must be {"column": <identifier>, "claim": <name>}.',
                code="invalid_rules",
            )


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
