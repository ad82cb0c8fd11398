"""The transactional outbox: a change is delivered once, and only if it commits."""

import orjson
import pytest
from django.db import transaction

from realtime.layer import CHANGE_TYPE
from realtime.models import LiveUpdate
from realtime.services.changes import ChangeInput, live_updates_record

pytestmark = pytest.mark.django_db(transaction=True)


class Boom(Exception):
    pass


def orders(*ids: int) -> list[ChangeInput]:
    return [ChangeInput(table="orders", type="INSERT", record={"id": i}) for i in ids]


def test_commit_sends_exactly_one_message_per_change(tenant, listen):
    listener = listen(tenant.tenant.pk, "orders")
    with transaction.atomic():
        rows = live_updates_record(tenant=tenant.tenant, changes=orders(1, 2, 3))
        assert listener.receive_nothing(wait=0.3), "sent before commit"
    messages = listener.receive(count=3)
    assert [m["seq"] for m in messages] == [r.pk for r in rows]
    assert all(m["type"] == CHANGE_TYPE for m in messages)
    assert [orjson.loads(m["data"])["record"]["id"] for m in messages] == [1, 2, 3]
    assert listener.receive_nothing(), "a change was sent twice"


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
    assert orjson.loads(message["data"])["record"] == {"id": 1}
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
    data = orjson.loads(listener.receive(count=1)[0]["data"])
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
