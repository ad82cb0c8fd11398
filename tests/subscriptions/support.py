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
