"""Helpers for the durable subscription tests: publish, subscribe, run the worker."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any

import orjson
from django.core.management import call_command

from realtime.auth import token_mint
from realtime.services.changes import ChangeInput, live_updates_record
from realtime.services.tenants import row_policy_add
from subscriptions.models import ChannelDefinition

SECRET = "whsec-0123456789abcdef"


def run_worker() -> None:
    call_command("realtime_maintenance", "--once", stdout=io.StringIO())


def run_worker_until(done: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "the worker did not get there in time"
        run_worker()
        time.sleep(0.02)


def publish(creds: Any, table: str, type: str = "INSERT", **record: Any) -> int:
    change = ChangeInput(
        table=table,
        type=type,
        record=None if type == "DELETE" else record,
        old_record=dict(record) if type != "INSERT" else None,
    )
    return live_updates_record(tenant=creds.tenant, changes=[change])[0].pk


# A response moved from supplier s-2 to s-1, and one that stayed with s-1.
MOVED_OLD = {"id": 1, "supplier_id": "s-2", "note": "secret"}
KEPT_OLD = {"id": 2, "supplier_id": "s-1", "note": "old"}


def publish_updates(creds: Any) -> list[int]:
    """UPDATEs of form_responses to s-1 rows: MOVED_OLD's, then KEPT_OLD's."""
    changes = [
        ChangeInput(
            table="form_responses",
            type="UPDATE",
            record={**old, "supplier_id": "s-1", "note": "new"},
            old_record=old,
        )
        for old in (MOVED_OLD, KEPT_OLD)
    ]
    return [c.pk for c in live_updates_record(tenant=creds.tenant, changes=changes)]


def supplier_token(creds: Any, supplier: str, sub: str = "user-1") -> str:
    return token_mint(
        tenant=creds.tenant,
        role="authenticated",
        sub=sub,
        claims={"supplier_id": supplier},
        ttl=600,
    )


def subscribe(api: Any, creds: Any, body: Any, token: str | None = None) -> Any:
    headers = {"HTTP_APIKEY": creds.publishable_key if token else creds.secret_key}
    if token:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return api.post(
        "/api/realtime/subscribe",
        orjson.dumps(body),
        content_type="application/json",
        **headers,
    )


def form_channel(creds: Any) -> Any:
    """The issue's example: `form-responses` on `form_responses` by `supplier_id`."""
    ChannelDefinition.objects.create(
        tenant=creds.tenant,
        name="form-responses",
        table="form_responses",
        filter_column="supplier_id",
        claim="supplier_id",
    )
    row_policy_add(
        tenant=creds.tenant,
        table="form_responses",
        role="authenticated",
        rules=[{"column": "supplier_id", "claim": "supplier_id"}],
    )
    return creds
