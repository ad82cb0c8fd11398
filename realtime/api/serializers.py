"""Input fields shared by the REST views."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers


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
