"""The transactional outbox: a change is delivered once, and only if it commits."""

import orjson
import pytest
import redis
from django.conf import settings
from django.db import transaction

from realtime.layer import (
    CHANGES_TYPE,
    MAX_CHANGES_PER_MESSAGE,
    changes_messages,
    stream_group,
    tenant_group,
)
from realtime.models import LiveUpdate
from realtime.services.changes import ChangeInput, live_updates_record

pytestmark = pytest.mark.django_db(transaction=True)


class Boom(Exception):
    pass


def orders(*ids: int) -> list[ChangeInput]:
    return [ChangeInput(table="orders", type="INSERT", record={"id": i}) for i in ids]


def records(message: dict) -> list:
    return [orjson.loads(data)["record"] for data in message["data"]]


def test_commit_sends_the_publish_once_in_order(tenant, listen):
    listener = listen(tenant.tenant.pk, "orders")
    with transaction.atomic():
        rows = live_updates_record(tenant=tenant.tenant, changes=orders(1, 2, 3))
        assert listener.receive_nothing(wait=0.3), "sent before commit"
    [message] = listener.receive(count=1)
    assert message["type"] == CHANGES_TYPE
    assert message["seqs"] == [r.pk for r in rows]
    assert [r["id"] for r in records(message)] == [1, 2, 3]
    assert listener.receive_nothing(), "a change was sent twice"


def test_mixed_tables_keep_cursor_order_for_a_socket_on_both(tenant):
    """Runs of one table share a message; a process on both streams (or on the
    tenant's) still meets the changes in the order they were published."""
    changes = [
        ChangeInput(table=table, type="INSERT", record={"id": i})
        for i, table in enumerate(["a", "a", "b", "a"], start=1)
    ]
    rows = live_updates_record(tenant=tenant.tenant, changes=changes)
    messages = changes_messages(rows)
    t = tenant.tenant.pk
    assert [(m["stream"], m["seqs"]) for m in messages] == [
        (stream_group(t, "a"), [rows[0].pk, rows[1].pk]),
        (stream_group(t, "b"), [rows[2].pk]),
        (stream_group(t, "a"), [rows[3].pk]),
        (tenant_group(t), [r.pk for r in rows]),
    ]


def test_a_large_publish_is_split_into_bounded_messages(tenant, listen):
    listener = listen(tenant.tenant.pk, "orders")
    count = MAX_CHANGES_PER_MESSAGE + 5
    rows = live_updates_record(tenant=tenant.tenant, changes=orders(*range(count)))
    first, second = listener.receive(count=2)
    assert len(first["data"]) == MAX_CHANGES_PER_MESSAGE
    assert first["seqs"] + second["seqs"] == [r.pk for r in rows]
    assert listener.receive_nothing()


def test_rollback_records_and_sends_nothing(tenant, listen):
    listener = listen(tenant.tenant.pk, "orders")
    with pytest.raises(Boom), transaction.atomic():
        live_updates_record(tenant=tenant.tenant, changes=orders(1))
        raise Boom
    assert not LiveUpdate.objects.exists()
    assert listener.receive_nothing()


def test_inner_rollback_discards_only_its_changes(tenant, listen):
    listener = listen(tenant.tenant.pk, "orders")
    with transaction.atomic():
        live_updates_record(tenant=tenant.tenant, changes=orders(1))
        with pytest.raises(Boom), transaction.atomic():
            live_updates_record(tenant=tenant.tenant, changes=orders(2))
            raise Boom
    [message] = listener.receive(count=1)
    assert records(message) == [{"id": 1}]
    assert listener.receive_nothing()


def test_message_is_the_postgres_changes_data_with_its_cursor(tenant, listen):
    listener = listen(tenant.tenant.pk, "orders")
    [row] = live_updates_record(
        tenant=tenant.tenant,
        changes=[
            ChangeInput(
                table="orders",
                type="UPDATE",
                record={"id": 1, "n": 2.5},
                old_record={"id": 1},
            )
        ],
    )
    data = orjson.loads(listener.receive(count=1)[0]["data"][0])
    assert data == {
        "schema": "public",
        "table": "orders",
        "type": "UPDATE",
        "commit_timestamp": data["commit_timestamp"],
        "columns": [{"name": "id", "type": "int8"}, {"name": "n", "type": "float8"}],
        "record": {"id": 1, "n": 2.5},
        "old_record": {"id": 1},
        "errors": None,
        "seq": row.pk,
    }
    assert (
        data["commit_timestamp"].endswith("Z") and len(data["commit_timestamp"]) == 24
    )


def test_other_tenants_stream_hears_nothing(make_tenant, listen):
    a, b = make_tenant("A"), make_tenant("B")
    listener = listen(b.tenant.pk, "orders")
    live_updates_record(tenant=a.tenant, changes=orders(1))
    assert listener.receive_nothing()


def test_cursors_increase_in_commit_order(tenant):
    first = live_updates_record(tenant=tenant.tenant, changes=orders(1, 2))
    second = live_updates_record(tenant=tenant.tenant, changes=orders(3))
    ids = [r.pk for r in first + second]
    assert ids == sorted(ids) and len(set(ids)) == 3


def test_publishing_from_sync_code_reuses_its_redis_connection(tenant):
    """A worker saving tracked models publishes on every commit. It must not
    open a Redis connection per publish (asgiref makes an event loop per call
    outside a server, channels-redis a pool per loop)."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    before = client.info("stats")["total_connections_received"]
    for n in range(20):
        live_updates_record(tenant=tenant.tenant, changes=orders(n))
    opened = client.info("stats")["total_connections_received"] - before
    client.close()
    assert opened <= 2, f"{opened} Redis connections for 20 publishes"
