"""Validators shared by models, services and serializers."""

import re

from django.core.exceptions import ValidationError

# A plain SQL identifier: what a table or column name may be. Anything else
# (quotes, dots, spaces) is refused rather than escaped.
IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


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
