"""Tracking Django models: every write to their table becomes a change.

    from realtime.tracking import track
    track(Article, tenant="site")          # a foreign key to realtime.Tenant
    track(Page, tenant="tenant_slug")      # a column holding the tenant's slug
    track(Setting, tenant_slug="acme")     # one tenant for every row

Capture happens in the database (realtime.capture): triggers, installed and
refreshed after every `migrate`, record INSERT/UPDATE/DELETE in the writer's
own transaction, whatever issued it (save(), update(), bulk_create(), raw
SQL, another program). Signals only wake delivery once a save or delete
commits; they never record, so a write is recorded exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.db import models
from django.db.models.signals import post_delete, post_save

from realtime.models import Tenant
from realtime.wake import wake_on_commit


@dataclass(frozen=True, slots=True)
class Tracked:
    model: type[models.Model]
    table: str
    tenant_kind: str  # "id", "slug" (a column) or "fixed" (a slug)
    tenant_value: str  # the column, or the fixed tenant's slug
    tenant_attname: str | None = None  # the attribute holding a tenant id


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


def _tenant_source(
    model: type[models.Model], tenant: str | None, tenant_slug: str | None
) -> tuple[str, str, str | None]:
    if (tenant is None) == (tenant_slug is None):
        raise ImproperlyConfigured("track(): give tenant=FIELD or tenant_slug=SLUG")
    if tenant_slug is not None:
        return "fixed", tenant_slug, None
    assert tenant is not None
    try:
        field = model._meta.get_field(tenant)
    except FieldDoesNotExist:
        field = None
    if isinstance(field, models.ForeignKey) and field.related_model is Tenant:
        return "id", field.column or field.attname, field.attname
    if isinstance(field, models.CharField):
        return "slug", field.column or field.attname, None
    # The database computes the tenant of each row itself: it must be a
    # column of the row, not a path through other tables.
    raise ImproperlyConfigured(
        f"track({model.__name__}, tenant={tenant!r}): name a foreign key to "
        "realtime.Tenant or a column holding the tenant's slug"
    )


def track(
    model: type[models.Model],
    *,
    tenant: str | None = None,
    tenant_slug: str | None = None,
    table: str | None = None,
) -> Tracked:
    """Record INSERT/UPDATE/DELETE changes of `model`'s table.

    `tenant` names a field of the model: a foreign key to Tenant or a column
    holding a tenant's slug; or `tenant_slug` is one tenant for every row.
    `table` (the name changes are published under) defaults to db_table.
    The triggers are installed by `migrate` (a post_migrate hook).
    """
    kind, value, attname = _tenant_source(model, tenant, tenant_slug)
    tracked = Tracked(
        model=model,
        table=table or model._meta.db_table,
        tenant_kind=kind,
        tenant_value=value,
        tenant_attname=attname,
    )
    _registry[model] = tracked
    uid = f"herald-track-{model._meta.label_lower}"
    post_save.connect(_after_write, sender=model, dispatch_uid=uid, weak=False)
    post_delete.connect(_after_write, sender=model, dispatch_uid=uid, weak=False)
    return tracked


def tracked(model: type[models.Model]) -> Tracked:
    return _registry[model]


def tracked_models() -> list[Tracked]:
    return list(_registry.values())


def _after_write(
    sender: type[models.Model], instance: models.Model, **kwargs: Any
) -> None:
    spec = _registry[sender]
    attname = spec.tenant_attname
    wake_on_commit(tenant_id=getattr(instance, attname) if attname else None)


def tracked_models_install(**kwargs: Any) -> None:
    """post_migrate: install or refresh the triggers of every tracked model,
    and of every table tracked by command (track_table)."""
    from realtime.capture.services import model_track, tracked_tables_refresh

    for spec in _registry.values():
        model_track(
            model=spec.model,
            table=spec.table,
            tenant_kind=spec.tenant_kind,
            tenant_value=spec.tenant_value,
        )
    tracked_tables_refresh()
