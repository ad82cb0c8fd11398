"""The JSON parser: what PostgreSQL could not store is refused up front (400)."""

import orjson
import pytest

from audit.models import ActivityLog, EventType
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


def nested(depth):
    """JSON text of objects and arrays nested `depth` levels, an object outside.

    Text, not values: orjson cannot write what is too deep, which is the point.
    """
    opening = "".join('{"k":' if level % 2 == 0 else "[" for level in range(depth))
    closing = "".join("}" if level % 2 == 0 else "]" for level in range(depth))
    return opening + "1" + closing[::-1]


DEEP = nested(300)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/changes", f'{{"table": "t", "type": "INSERT", "record": {DEEP}}}'),
        (
            "/api/changes",
            '[{"table": "t", "type": "INSERT", "record": {"id": 1}}, '
            '{"table": "t", "type": "UPDATE", "record": {}, '
            f'"old_record": {DEEP}}}]',
        ),
        (
            "/api/live-updates",
            '{"site_id": 1, "event_type": "content.created", "collection": "posts", '
            f'"item_id": 1, "metadata": {DEEP}}}',
        ),
        (
            "/realtime/v1/api/broadcast",
            '{"messages": [{"topic": "t", "event": "e", '
            f'"payload": {nested(1000)}}}]}}',
        ),
        ("/realtime/v1/api/broadcast/room/events/e", nested(1000)),
        ("/api/tokens", f'{{"sub": "u", "claims": {{"deep": {DEEP}}}}}'),
    ],
)
def test_json_nested_too_deep_is_refused_and_nothing_is_written(
    api, tenant, listen, path, body
):
    listener = listen(tenant.tenant.pk, "t")
    response = api.post(
        path, body, content_type="application/json", HTTP_APIKEY=tenant.secret_key
    )
    assert response.status_code == 400, response.content
    assert response.json() == {
        "error": "invalid",
        "message": "The JSON body nests deeper than 32 levels of arrays and objects",
    }
    assert not LiveUpdate.objects.exists()
    assert not ActivityLog.objects.filter(
        event_type__in=[EventType.PUBLISH, EventType.REST_BROADCAST]
    ).exists()
    assert listener.receive_nothing()


def test_a_record_as_deep_as_allowed_is_published_and_delivered(api, tenant, listen):
    listener = listen(tenant.tenant.pk, "t")
    record = nested(31)  # inside the change object: 32 levels in all
    response = api.post(
        "/api/changes",
        f'{{"table": "t", "type": "INSERT", "record": {record}}}',
        content_type="application/json",
        HTTP_APIKEY=tenant.secret_key,
    )
    assert response.status_code == 201, response.content
    assert listener.changes(count=1)[0]["record"] == orjson.loads(record)
