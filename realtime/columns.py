"""Postgres type names for the `columns` of a change, as Supabase sends them."""

from typing import Any

from django.db import models

# Django's internal field types to Postgres `typname`s (what realtime-js uses
# to convert values in the client).
FIELD_TYPES = {
    "AutoField": "int4",
    "BigAutoField": "int8",
    "SmallAutoField": "int2",
    "IntegerField": "int4",
    "BigIntegerField": "int8",
    "SmallIntegerField": "int2",
    "PositiveIntegerField": "int4",
    "PositiveBigIntegerField": "int8",
    "PositiveSmallIntegerField": "int2",
    "BooleanField": "bool",
    "CharField": "varchar",
    "SlugField": "varchar",
    "EmailField": "varchar",
    "URLField": "varchar",
    "TextField": "text",
    "UUIDField": "uuid",
    "DateTimeField": "timestamptz",
    "DateField": "date",
    "TimeField": "time",
    "DurationField": "interval",
    "DecimalField": "numeric",
    "FloatField": "float8",
    "JSONField": "jsonb",
    "BinaryField": "bytea",
    "GenericIPAddressField": "inet",
}


def value_type(value: Any) -> str:
    """The Postgres type a JSON value would have in a table of its own."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int8"
    if isinstance(value, float):
        return "float8"
    if isinstance(value, dict | list):
        return "jsonb"
    return "text"


def columns_infer(record: dict[str, Any] | None) -> list[dict[str, str]]:
    return [{"name": k, "type": value_type(v)} for k, v in (record or {}).items()]


def columns_for_model(model: type[models.Model]) -> list[dict[str, str]]:
    return [
        {"name": f.attname, "type": _field_type(f)} for f in model._meta.concrete_fields
    ]


def _field_type(field: models.Field) -> str:
    internal = field.get_internal_type()
    if internal == "ForeignKey":
        target = field.target_field  # type: ignore[attr-defined]
        return FIELD_TYPES.get(target.get_internal_type(), "text")
    return FIELD_TYPES.get(internal, "text")
