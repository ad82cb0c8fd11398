"""REST publishing, and every refusal leaving nothing written."""

import orjson
import pytest
from django.test import override_settings

from audit.models import ActivityLog, EventType
from realtime.auth import token_mint
from realtime.models import ApiKey, LiveUpdate
from realtime.services.tenants import api_key_revoke

pytestmark = pytest.mark.django_db(transaction=True)

EVENT = {
    "site_id": 42,
    "event_type": "content.published",
    "collection": "posts",
    "slug": "hello",
    "item_id": "7",
    "metadata": {"by": "editor"},
}


def post(api, path, body, key=None, bearer=None, raw=False):
    headers = {}
    if key:
        headers["HTTP_APIKEY"] = key
    if bearer:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {bearer}"
    data = body if raw else orjson.dumps(body)
    return api.post(path, data, content_type="application/json", **headers)


def nothing_written():
    return (
        not LiveUpdate.objects.exists()
        and not ActivityLog.objects.filter(event_type=EventType.PUBLISH).exists()
    )


def test_content_event_becomes_an_insert_on_live_updates(api, tenant, listen):
    listener = listen(tenant.tenant.pk, "live_updates")
    response = post(api, "/api/live-updates", EVENT, key=tenant.secret_key)
    assert response.status_code == 201, response.content
    body = response.json()
    record = body["record"]
    assert record["id"] == body["seq"]
    assert {k: record[k] for k in EVENT} == EVENT
    assert set(record) == {"id", *EVENT, "timestamp"}
    change = LiveUpdate.objects.get()
    assert (change.table, change.type, change.record) == (
        "live_updates",
        "INSERT",
        record,
    )
    data = listener.changes(count=1)[0]
    assert data["record"] == record and data["seq"] == body["seq"]
    log = ActivityLog.objects.get(event_type=EventType.PUBLISH)
    assert log.tenant == tenant.tenant and log.target == "live_updates"


def test_changes_accepts_one_change_or_a_list(api, tenant):
    one = {"table": "orders", "type": "INSERT", "record": {"id": 1}}
    assert post(api, "/api/changes", one, key=tenant.secret_key).status_code == 201
    many = [
        {
            "table": "orders",
            "type": "UPDATE",
            "record": {"id": 1, "s": "paid"},
            "old_record": {"id": 1, "s": "new"},
        },
        {"table": "orders", "type": "DELETE", "old_record": {"id": 1}},
    ]
    response = post(api, "/api/changes", many, key=tenant.secret_key)
    assert response.status_code == 201
    assert [c["type"] for c in response.json()["changes"]] == ["UPDATE", "DELETE"]
    assert list(LiveUpdate.objects.values_list("type", flat=True)) == [
        "INSERT",
        "UPDATE",
        "DELETE",
    ]


def test_service_role_token_may_publish(api, tenant):
    token = token_mint(tenant=tenant.tenant, role="service_role", ttl=60)
    response = post(
        api,
        "/api/changes",
        {"table": "t", "type": "INSERT", "record": {}},
        key=tenant.publishable_key,
        bearer=token,
    )
    assert response.status_code == 201


def test_a_list_with_one_bad_change_writes_nothing(api, tenant):
    changes = [
        {"table": "orders", "type": "INSERT", "record": {"id": 1}},
        {"table": "orders; DROP TABLE x", "type": "INSERT", "record": {"id": 2}},
    ]
    response = post(api, "/api/changes", changes, key=tenant.secret_key)
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid",
        "message": "[1].table: 'orders; DROP TABLE x' is not a plain identifier",
    }
    assert nothing_written()


@pytest.mark.parametrize(
    ("key", "status", "error"),
    [
        (None, 401, "missing_api_key"),
        ("sk_unknown", 401, "invalid_api_key"),
        ("publishable", 403, "forbidden"),
    ],
)
def test_refused_keys(api, tenant, key, status, error):
    key = tenant.publishable_key if key == "publishable" else key
    response = post(api, "/api/live-updates", EVENT, key=key)
    assert response.status_code == status
    assert response.json()["error"] == error and response.json()["message"]
    assert nothing_written()


def test_revoked_key_is_refused(api, tenant):
    api_key_revoke(key=ApiKey.objects.get(tenant=tenant.tenant, kind="secret"))
    response = post(api, "/api/live-updates", EVENT, key=tenant.secret_key)
    assert response.status_code == 401
    assert nothing_written()


def test_other_tenants_bearer_is_refused(api, make_tenant):
    a, b = make_tenant("A"), make_tenant("B")
    response = post(
        api,
        "/api/changes",
        {"table": "t", "type": "INSERT", "record": {}},
        key=a.publishable_key,
        bearer=b.secret_key,
    )
    assert response.status_code == 401
    assert nothing_written()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({**EVENT, "event_type": "content.exploded"}, "event_type: "),
        (
            {k: v for k, v in EVENT.items() if k != "collection"},
            "collection: This field is required.",
        ),
        ({**EVENT, "site_id": True}, "site_id: Must be a string or an integer."),
        ({**EVENT, "metadata": [1]}, "metadata: "),
        ([EVENT], "Invalid data"),
    ],
)
def test_malformed_content_event_names_the_field(api, tenant, body, message):
    response = post(api, "/api/live-updates", body, key=tenant.secret_key)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid"
    assert message in response.json()["message"]
    assert nothing_written()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"type": "INSERT", "record": {}}, "table: This field is required."),
        ({"table": "t", "type": "UPSERT", "record": {}}, "type: "),
        ({"table": "t", "type": "INSERT"}, "record: an object is required for INSERT"),
        (
            {"table": "t", "type": "DELETE"},
            "old_record: an object is required for DELETE",
        ),
        ({"table": "t", "type": "INSERT", "record": [1]}, "record: "),
        (
            {"table": "1t", "type": "INSERT", "record": {}},
            "table: '1t' is not a plain identifier",
        ),
        ({"table": "a.b", "type": "INSERT", "record": {}}, "is not a plain identifier"),
        ({"table": "x" * 64, "type": "INSERT", "record": {}}, "table: "),
        ([], "at least one change"),
    ],
)
def test_malformed_change_names_the_field(api, tenant, body, message):
    response = post(api, "/api/changes", body, key=tenant.secret_key)
    assert response.status_code == 400, response.content
    assert message in response.json()["message"]
    assert nothing_written()


def test_invalid_json_is_refused(api, tenant):
    response = post(api, "/api/changes", b'{"table": ', key=tenant.secret_key, raw=True)
    assert response.status_code == 400
    assert response.json()["error"] == "parse_error"
    assert "Malformed JSON" in response.json()["message"]
    assert nothing_written()


@override_settings(HERALD_MAX_BODY_BYTES=1000)
def test_oversized_body_is_refused_with_413(api, tenant):
    big = {"table": "t", "type": "INSERT", "record": {"blob": "x" * 2000}}
    response = post(api, "/api/changes", big, key=tenant.secret_key)
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert nothing_written()


@override_settings(HERALD_MAX_BATCH=2)
def test_too_many_changes_in_one_request_is_refused(api, tenant):
    change = {"table": "t", "type": "INSERT", "record": {}}
    response = post(api, "/api/changes", [change] * 3, key=tenant.secret_key)
    assert response.status_code == 400 and "At most 2" in response.json()["message"]
    assert nothing_written()


def test_unknown_endpoint_answers_json_404(api):
    response = api.get("/api/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
