"""A reconnect storm, as after a deploy: many sockets connect and join at once.

Real server processes, real Redis and PostgreSQL, sockets over `websockets`
all opened together. Every socket the limits allow must get in and then get
its changes; the limits themselves must still hold exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from realtime.auth import token_mint
from realtime.services.changes import ChangeInput, live_updates_record
from realtime.services.tenants import TenantCredentials, row_policy_add

pytestmark = pytest.mark.django_db(transaction=True)

SITES = 10


def url(server: Any, key: str) -> str:
    return f"{server.ws_url}/realtime/v1/websocket?apikey={key}&vsn=1.0.0"


def join_frame(n: int, token: str) -> str:
    binding = {
        "event": "*",
        "schema": "public",
        "table": "orders",
        "filter": f"site_id=eq.{n % SITES}",
    }
    payload = {"config": {"postgres_changes": [binding]}, "access_token": token}
    return orjson.dumps(
        {
            "topic": f"realtime:user-{n}",
            "event": "phx_join",
            "payload": payload,
            "ref": "1",
            "join_ref": "1",
        }
    ).decode()


async def next_frame(ws: Any, wanted: Any, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        raw = await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic()))
        frame = orjson.loads(raw)
        if wanted(frame):
            return dict(frame)


async def connect_and_join(server: Any, key: str, n: int, token: str) -> Any:
    """A socket joined on its own topic, or the reason it was refused."""
    ws = await connect(url(server, key), open_timeout=60)
    await ws.send(join_frame(n, token))
    reply = await next_frame(ws, lambda f: f["event"] == "phx_reply")
    return ws, reply


def lift_limits(creds: TenantCredentials, **limits: int) -> None:
    for name, value in limits.items():
        setattr(creds.tenant, name, value)
    creds.tenant.save()


def test_a_reconnect_storm_gets_every_socket_in_and_its_changes(
    tenant: TenantCredentials, start_server: Any
) -> None:
    # Far fewer Redis connections than sockets arriving at once: before
    # the storm's Redis work was pipelined, each socket in flight took a
    # connection of its own and those past the pool were refused.
    server = start_server(HERALD_REDIS_POOL_SIZE="8")
    count = 200
    lift_limits(tenant, max_joins_per_second=10_000, max_concurrent_users=10_000)
    # Each user sees its own site's rows, as Supabase users' RLS would say.
    row_policy_add(
        tenant=tenant.tenant,
        table="orders",
        role="authenticated",
        rules=[{"column": "site_id", "claim": "site_id"}],
    )
    tokens = [
        token_mint(
            tenant=tenant.tenant,
            role="authenticated",
            sub=f"user-{n}",
            claims={"site_id": n % SITES},
            ttl=600,
        )
        for n in range(count)
    ]

    async def storm() -> None:
        results = await asyncio.gather(
            *(
                connect_and_join(server, tenant.publishable_key, n, tokens[n])
                for n in range(count)
            )
        )
        statuses = [reply["payload"]["status"] for _, reply in results]
        assert statuses == ["ok"] * count, [
            r["payload"] for _, r in results if r["payload"]["status"] != "ok"
        ][:3]
        # Every socket's memberships were made: each gets its site's change.
        cursors = {
            site: await asyncio.to_thread(publish, tenant, site)
            for site in range(SITES)
        }
        for n, (ws, _) in enumerate(results):
            change = await next_frame(ws, lambda f: f["event"] == "postgres_changes")
            assert change["topic"] == f"realtime:user-{n}"
            assert change["payload"]["data"]["seq"] == cursors[n % SITES]
        await asyncio.gather(*(ws.close() for ws, _ in results))

    asyncio.run(storm())


def publish(creds: TenantCredentials, site: int) -> int:
    change = ChangeInput(
        table="orders", type="INSERT", record={"id": site, "site_id": site}
    )
    return live_updates_record(tenant=creds.tenant, changes=[change])[0].pk


def test_sockets_arriving_together_take_exactly_the_tenants_places(
    tenant: TenantCredentials, herald_server: Any
) -> None:
    # Counted one command at a time, concurrent connects could each see the
    # others' counts and all back off: refused below the limit.
    places, arriving = 10, 40
    lift_limits(tenant, max_concurrent_users=places, max_joins_per_second=10_000)

    async def arrive() -> list[str]:
        async def one() -> tuple[Any, str]:
            ws = await connect(url(herald_server, tenant.publishable_key))
            frame = orjson.dumps(
                {
                    "topic": "realtime:room",
                    "event": "phx_join",
                    "payload": {"config": {}},
                    "ref": "1",
                    "join_ref": "1",
                }
            ).decode()
            # A refused socket may be closed before this is sent; the
            # refusal's reply is read from what arrived all the same.
            with contextlib.suppress(ConnectionClosed):
                await ws.send(frame)
            reply = await next_frame(ws, lambda f: f["event"] == "phx_reply")
            return ws, reply["payload"].get("response", {}).get("reason", "ok")

        results = await asyncio.gather(*(one() for _ in range(arriving)))
        await asyncio.gather(*(ws.close() for ws, _ in results))
        return [outcome for _, outcome in results]

    outcomes = asyncio.run(arrive())
    assert outcomes.count("ok") == places, outcomes
    assert (
        outcomes.count("ConnectionRateLimitReached: Too many connected users")
        == arriving - places
    )
