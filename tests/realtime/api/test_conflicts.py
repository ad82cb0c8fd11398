"""Conflict-aware publishing: last write wins per record, the same way every time."""

import random
import threading

import orjson
import pytest
from django.db import connection

from audit.models import ActivityLog, EventType
from realtime.models import LiveUpdate, RecordVersion

pytestmark = pytest.mark.django_db(transaction=True)

T1 = "2026-03-01T10:00:00Z"
T2 = "2026-03-01T10:00:05Z"


def change(id, title, updated_at, device, type="UPDATE", **extra):
    record = {"id": id, "title": title}
    body = {
        "table": "notes",
        "type": type,
        "version": {"updated_at": updated_at, "device_id": device},
        **extra,
    }
    if type == "DELETE":
        body["old_record"] = record
    else:
        body["record"] = record
    return body


def post(api, creds, body, client=None):
    return (client or api).post(
        "/api/changes",
        orjson.dumps(body),
        content_type="application/json",
        HTTP_APIKEY=creds.secret_key,
    )


def delivered_titles(listener, count):
    return [data["record"]["title"] for data in listener.changes(count=count)]


def test_an_older_update_arriving_late_is_refused_as_stale(api, tenant, listen):
    listener = listen(tenant.tenant.pk, "notes")
    newer = post(api, tenant, change(1, "from laptop", T2, "laptop"))
    assert newer.status_code == 201
    assert newer.json()["changes"][0]["status"] == "published"

    older = post(api, tenant, change(1, "from phone", T1, "phone"))
    assert older.status_code == 200
    assert older.json() == {
        "changes": [
            {
                "seq": None,
                "table": "notes",
                "type": "UPDATE",
                "commit_timestamp": None,
                "status": "stale",
                "current_version": {
                    "updated_at": "2026-03-01T10:00:05+00:00",
                    "device_id": "laptop",
                },
            }
        ]
    }
    assert delivered_titles(listener, 1) == ["from laptop"]
    assert listener.receive_nothing()
    assert [u.record["title"] for u in LiveUpdate.objects.all()] == ["from laptop"]
    conflict = ActivityLog.objects.get(event_type=EventType.CONFLICT)
    assert conflict.target == "notes#1"
    assert conflict.details["refused"]["device_id"] == "phone"
    assert RecordVersion.objects.get().conflicts == 1


@pytest.mark.parametrize("order", [("phone", "laptop"), ("laptop", "phone")])
def test_equal_timestamps_are_decided_by_device_id_in_either_order(
    api, tenant, listen, order
):
    listener = listen(tenant.tenant.pk, "notes")
    statuses = [
        post(api, tenant, change(7, device, T1, device)).json()["changes"][0]["status"]
        for device in order
    ]
    # "phone" > "laptop": phone's version wins whichever arrives first.
    if order[0] == "phone":
        assert statuses == ["published", "stale"]
        assert delivered_titles(listener, 1) == ["phone"]
    else:
        assert statuses == ["published", "published"]
        assert delivered_titles(listener, 2) == ["laptop", "phone"]
    assert listener.receive_nothing()
    version = RecordVersion.objects.get(table="notes", pk_value="7")
    assert version.device_id == "phone"
    assert LiveUpdate.objects.latest("pk").record["title"] == "phone"


def test_the_same_version_twice_is_published_once(api, tenant):
    body = change(2, "retry", T1, "phone")
    assert post(api, tenant, body).status_code == 201
    again = post(api, tenant, body)
    assert again.status_code == 200
    assert again.json()["changes"][0]["status"] == "stale"
    assert LiveUpdate.objects.count() == 1


def test_a_batch_is_judged_change_by_change(api, tenant):
    response = post(
        api,
        tenant,
        [
            change(3, "new", T2, "a"),
            change(3, "old", T1, "b"),
            {"table": "notes", "type": "INSERT", "record": {"id": 4}},  # no version
            change(5, "other record", T1, "b"),
        ],
    )
    assert response.status_code == 201
    assert [c["status"] for c in response.json()["changes"]] == [
        "published",
        "stale",
        "published",
        "published",
    ]
    seqs = [c["seq"] for c in response.json()["changes"]]
    assert seqs[1] is None and seqs[0] < seqs[2] < seqs[3]
    assert list(LiveUpdate.objects.values_list("pk", flat=True)) == [
        s for s in seqs if s
    ]


def test_a_newer_delete_makes_older_updates_stale(api, tenant):
    assert post(api, tenant, change(6, "x", T2, "a", type="DELETE")).status_code == 201
    late = post(api, tenant, change(6, "y", T1, "b"))
    assert late.json()["changes"][0]["status"] == "stale"


def test_epoch_milliseconds_and_iso_name_the_same_instant(api, tenant):
    epoch_ms = 1772359205000  # 2026-03-01T10:00:05Z
    assert post(api, tenant, change(8, "iso", T2, "a")).status_code == 201
    same = post(api, tenant, change(8, "ms", epoch_ms, "a"))
    assert same.json()["changes"][0]["status"] == "stale"
    later = post(api, tenant, change(8, "ms", epoch_ms + 1, "a"))
    assert later.json()["changes"][0]["status"] == "published"


def test_another_primary_key_column(api, tenant):
    body = {
        "table": "notes",
        "type": "UPDATE",
        "record": {"uuid": "n-1", "title": "new"},
        "pk": "uuid",
        "version": {"updated_at": T2},
    }
    assert post(api, tenant, body).status_code == 201
    stale = {**body, "version": {"updated_at": T1}}
    assert post(api, tenant, stale).json()["changes"][0]["status"] == "stale"
    assert RecordVersion.objects.get().pk_value == "n-1"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {
                "table": "notes",
                "type": "UPDATE",
                "record": {"t": 1},
                "version": {"updated_at": T1},
            },
            "record.id: a string or integer primary key is required with a version",
        ),
        (
            {
                "table": "notes",
                "type": "UPDATE",
                "record": {"id": 1},
                "version": {"updated_at": "soon"},
            },
            "version.updated_at: Must be an ISO 8601 date-time or epoch milliseconds.",
        ),
        (
            {"table": "notes", "type": "UPDATE", "record": {"id": 1}, "version": {}},
            "version.updated_at: This field is required.",
        ),
    ],
)
def test_malformed_versions_are_refused(api, tenant, body, message):
    response = post(api, tenant, body)
    assert response.status_code == 400
    assert response.json()["message"].endswith(message)
    assert not LiveUpdate.objects.exists() and not RecordVersion.objects.exists()


def test_concurrent_devices_end_with_the_newest_version_delivered_last(tenant):
    """Many writers at once: no lost update, no stale change published after a newer."""
    from rest_framework.test import APIClient

    versions = [(f"2026-03-01T10:00:{s:02d}Z", d) for s in range(10) for d in "ab"]
    random.Random(7).shuffle(versions)
    barrier = threading.Barrier(8)
    work = list(versions)
    lock = threading.Lock()

    def writer():
        client = APIClient()
        barrier.wait()
        try:
            while True:
                with lock:
                    if not work:
                        return
                    updated_at, device = work.pop()
                title = f"{updated_at}/{device}"
                response = post(
                    None, tenant, change(1, title, updated_at, device), client
                )
                assert response.status_code in (200, 201), response.content
        finally:
            connection.close()

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    published = [u.record["title"] for u in LiveUpdate.objects.order_by("pk")]
    assert published == sorted(published)  # each one newer than the one before
    assert published[-1] == "2026-03-01T10:00:09Z/b"
    version = RecordVersion.objects.get()
    assert (version.device_id, version.updated_at.second) == ("b", 9)
    assert version.conflicts == len(versions) - len(published)


def test_a_plain_publish_leaves_every_version_row_alone(api, tenant):
    """A change without a version locks no version row: another writer holding
    one (a device mid-update) never holds up the tenant's plain publishes."""
    from django.db import transaction

    assert post(api, tenant, change(1, "first", T1, "a")).status_code == 201
    held, release = threading.Event(), threading.Event()

    def device_mid_update():
        try:
            with transaction.atomic():
                RecordVersion.objects.select_for_update().get()
                held.set()
                release.wait(30)
        finally:
            connection.close()

    holder = threading.Thread(target=device_mid_update)
    holder.start()
    try:
        assert held.wait(30)
        with connection.cursor() as cursor:  # waiting would be the defect
            cursor.execute("SET lock_timeout = '2s'")
        plain = {"table": "notes", "type": "INSERT", "record": {"id": 2}}
        assert post(api, tenant, plain).status_code == 201
    finally:
        release.set()
        holder.join(30)
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = 0")
    version = RecordVersion.objects.get()
    assert (version.seq, version.conflicts) == (LiveUpdate.objects.first().pk, 0)
