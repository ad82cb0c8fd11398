"""Tracking Django models: every save and delete becomes a change.

    from realtime.tracking import track
    track(Article, tenant="site.tenant")

Changes are recorded in the same transaction as the save, so a rollback
records and sends nothing.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from django.db import models
from django.db.models.signals import post_delete, post_save, pre_save

from realtime.columns import columns_for_model
from realtime.models import Tenant
from realtime.services.changes import ChangeInput, live_updates_record

TenantSource = str | Callable[[Any], Tenant]
OLD_ATTR = "_herald_old_record"


@dataclass(frozen=True, slots=True)
class Tracked:
    model: type[models.Model]
    table: str
    tenant_of: Callable[[Any], Tenant]


_registry: dict[type[models.Model], Tracked] = {}


def _json_default(value: Any) -> str:
    # Decimals and anything else orjson does not know travel as text, like
    # Postgres `numeric` values in Supabase payloads.
    return str(value)


def instance_record(instance: models.Model) -> dict[str, Any]:
    """The row as JSON: one key per concrete column, by attname."""
    values = {
        f.attname: f.value_from_object(instance) for f in instance._meta.concrete_fields
    }
    return orjson.loads(orjson.dumps(values, default=_json_default))


def track(
    model: type[models.Model], *, tenant: TenantSource, table: str | None = None
) -> Tracked:
    """Record INSERT/UPDATE/DELETE changes for `model` under `tenant`.

    `tenant` is a dotted attribute path from an instance to its Tenant, or a
    callable taking the instance. `table` defaults to the model's db_table.
    """
    tenant_of = operator.attrgetter(tenant) if isinstance(tenant, str) else tenant
    tracked = Tracked(
        model=model, table=table or model._meta.db_table, tenant_of=tenant_of
    )
    _registry[model] = tracked
    uid = f"herald-track-{model._meta.label_lower}"
    pre_save.connect(_before_save, sender=model, dispatch_uid=uid, weak=False)
    post_save.connect(_after_save, sender=model, dispatch_uid=uid, weak=False)
    post_delete.connect(_after_delete, sender=model, dispatch_uid=uid, weak=False)
    return tracked


def tracked(model: type[models.Model]) -> Tracked:
    return _registry[model]


def _before_save(
    sender: type[models.Model], instance: models.Model, **kwargs: Any
) -> None:
    setattr(instance, OLD_ATTR, _stored_record(instance))


def _after_save(
    sender: type[models.Model], instance: models.Model, created: bool, **kwargs: Any
) -> None:
    tracked_change_record(instance=instance, type="INSERT" if created else "UPDATE")


def _after_delete(
    sender: type[models.Model], instance: models.Model, **kwargs: Any
) -> None:
    tracked_change_record(instance=instance, type="DELETE")


def _stored_record(instance: models.Model) -> dict[str, Any] | None:
    """The row as the database holds it now, before this save overwrites it."""
    if instance._state.adding or instance.pk is None:
        return None
    stored = type(instance)._base_manager.filter(pk=instance.pk).first()
    return instance_record(stored) if stored is not None else None


def tracked_change_record(*, instance: models.Model, type: str) -> None:
    """Record one change of a tracked instance in the current transaction."""
    spec = _registry[instance.__class__]
    record = instance_record(instance)
    old = record if type == "DELETE" else getattr(instance, OLD_ATTR, None)
    change = ChangeInput(
        table=spec.table,
        type=type,
        record=None if type == "DELETE" else record,
        old_record=old,
        columns=columns_for_model(spec.model),
    )
    live_updates_record(tenant=spec.tenant_of(instance), changes=[change])
