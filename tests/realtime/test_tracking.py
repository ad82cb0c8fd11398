"""Tracked models: saves and deletes become changes in the same transaction."""

from decimal import Decimal

import pytest
from django.db import transaction

from realtime.models import LiveUpdate
from tests.tracked.models import Article

pytestmark = pytest.mark.django_db(transaction=True)


def article(tenant, **fields):
    return Article.objects.create(
        tenant=tenant.tenant, site_id=1, title="Hello", **fields
    )


def test_save_of_new_instance_records_insert_with_the_row(tenant, listen):
    listener = listen(tenant.tenant.pk, "articles")
    a = article(tenant, price=Decimal("9.50"), tags=["x"])
    change = LiveUpdate.objects.get()
    assert (change.table, change.type, change.old_record) == (
        "articles",
        "INSERT",
        None,
    )
    assert change.record["id"] == a.pk and change.record["title"] == "Hello"
    assert change.record["tenant_id"] == tenant.tenant.pk
    assert change.record["price"] == "9.50" and change.record["tags"] == ["x"]
    types = {c["name"]: c["type"] for c in change.columns}
    assert types == {
        "id": "int8",
        "tenant_id": "int8",
        "site_id": "int4",
        "title": "varchar",
        "published": "bool",
        "price": "numeric",
        "tags": "jsonb",
        "updated_at": "timestamptz",
    }
    data = listener.changes(count=1)[0]
    assert data["type"] == "INSERT" and data["record"]["title"] == "Hello"


def test_update_records_new_and_old_row(tenant):
    a = article(tenant)
    a.title, a.published = "Changed", True
    a.save()
    change = LiveUpdate.objects.last()
    assert change.type == "UPDATE"
    assert change.record["title"] == "Changed" and change.record["published"] is True
    assert (
        change.old_record["title"] == "Hello"
        and change.old_record["published"] is False
    )


def test_delete_records_the_old_row(tenant):
    a = article(tenant)
    pk = a.pk
    a.delete()
    change = LiveUpdate.objects.last()
    assert (change.type, change.record) == ("DELETE", None)
    assert change.old_record["id"] == pk and change.old_record["title"] == "Hello"


def test_rolled_back_save_records_and_sends_nothing(tenant, listen):
    listener = listen(tenant.tenant.pk, "articles")
    with pytest.raises(RuntimeError), transaction.atomic():
        article(tenant)
        raise RuntimeError
    assert not LiveUpdate.objects.exists() and not Article.objects.exists()
    assert listener.receive_nothing()
