"""The JSON parser: what PostgreSQL could not store is refused up front (400)."""

import pytest

from realtime.models import LiveUpdate

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize(
    "body",
    [
        b'{"table": "t", "type": "INSERT", "record": {"a": "x\\u0000y"}}',
        b'{"table": "t", "type": "INSERT", "record": {"\\u0000": 1}}',
        b'[{"table": "t", "type": "INSERT", "record": {"a": [[["\\u0000"]]]}}]',
    ],
)
def test_a_nul_character_is_refused_not_a_server_error(api, tenant, body):
    response = api.post(
        "/api/changes",
        body,
        content_type="application/json",
        HTTP_APIKEY=tenant.secret_key,
    )
    assert response.status_code == 400
    assert response.json()["error"] == "parse_error"
    assert "NUL" in response.json()["message"]
    assert not LiveUpdate.objects.exists()


def test_an_escaped_backslash_before_u0000_is_plain_text(api, tenant):
    body = b'{"table": "t", "type": "INSERT", "record": {"a": "\\\\u0000"}}'
    response = api.post(
        "/api/changes",
        body,
        content_type="application/json",
        HTTP_APIKEY=tenant.secret_key,
    )
    assert response.status_code == 201
    assert LiveUpdate.objects.get().record == {"a": "\\u0000"}
