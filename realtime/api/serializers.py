"""Input fields shared by the REST views."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "minLength": 1, "maxLength": 255},
            {"type": "integer"},
        ]
    }
)
class ScalarField(serializers.Field):
    """A string or an integer, kept as given (ids are either, in the wild)."""

    default_error_messages = {"invalid": "Must be a string or an integer."}

    def to_internal_value(self, data: Any) -> str | int:
        if isinstance(data, bool) or not isinstance(data, str | int):
            self.fail("invalid")
        if isinstance(data, str) and not (0 < len(data) <= 255):
            raise serializers.ValidationError("Must be 1 to 255 characters.")
        return data

    def to_representation(self, value: Any) -> Any:
        return value


class ChangeSerializer(serializers.Serializer):
    """A change as sockets receive it (`data` of a postgres_changes frame)."""

    schema = serializers.CharField()
    table = serializers.CharField()
    commit_timestamp = serializers.CharField(help_text="UTC, milliseconds, `Z`.")
    type = serializers.ChoiceField(choices=["INSERT", "UPDATE", "DELETE"])
    columns = serializers.ListField(
        child=serializers.DictField(child=serializers.CharField())
    )
    seq = serializers.IntegerField(help_text="The change's cursor.")
    record = serializers.DictField(required=False, help_text="Absent for DELETE.")
    old_record = serializers.DictField(
        required=False, help_text="For UPDATE and DELETE when the publisher gave it."
    )

    def get_fields(self) -> dict[str, serializers.Field]:
        # `errors` (always null, as Supabase sends it) cannot be a class attribute:
        # it would hide Serializer.errors.
        fields = super().get_fields()
        fields["errors"] = serializers.JSONField(allow_null=True)
        return fields


class ChangePageSerializer(serializers.Serializer):
    """A page of changes and the cursor to continue from."""

    changes = ChangeSerializer(many=True)
    next_cursor = serializers.IntegerField(
        help_text="Pass it as the next `since`/`after`: it moves past every row read."
    )
    has_more = serializers.BooleanField(
        help_text="More changes may follow: ask again from next_cursor."
    )
