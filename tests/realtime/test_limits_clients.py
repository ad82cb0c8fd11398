"""Limits reached through the official clients, with Supabase's reasons."""

from collections.abc import Iterator
from typing import Any

import pytest

from realtime.services.tenants import TenantCredentials
from tests.realtime_clients import ClientFactory, client_factory

pytestmark = pytest.mark.django_db(transaction=True)

ORDERS = [{"event": "*", "schema": "public", "table": "orders"}]


@pytest.fixture
def clients() -> Iterator[ClientFactory]:
    with client_factory() as open_client:
        yield open_client


def limit(tenant: TenantCredentials, **limits: int) -> None:
    for name, value in limits.items():
        setattr(tenant.tenant, name, value)
    tenant.tenant.save()


def status_of(client: Any, topic: str, since: int) -> dict[str, Any]:
    return client.wait_for(
        lambda e: e["event"] == "status" and e["topic"] == topic, since=since
    )


@pytest.mark.parametrize("kind", ["python", "supabase-js"])
def test_channels_per_connection(
    kind: str, clients: ClientFactory, herald_server: Any, make_tenant: Any
) -> None:
    tenant, other = make_tenant("Limited"), make_tenant("Other")
    limit(tenant, max_channels_per_client=1)
    client = clients(kind, herald_server, apikey=tenant.publishable_key)
    client.subscribe("first", ORDERS)
    refused = client.subscribe("second", ORDERS, expect="CHANNEL_ERROR")
    assert "ChannelRateLimitReached: Too many channels" in refused["error"]
    unaffected = clients(kind, herald_server, apikey=other.publishable_key)
    unaffected.subscribe("first", ORDERS)
    unaffected.subscribe("second", ORDERS)


def test_joins_per_second(
    clients: ClientFactory, herald_server: Any, tenant: Any
) -> None:
    limit(tenant, max_joins_per_second=1)
    client = clients("realtime-js", herald_server, apikey=tenant.publishable_key)
    since = client.mark()
    for n in range(4):  # a burst spans at most two one-second windows
        client.send("subscribe", topic=f"room-{n}", postgres_changes=ORDERS)
    statuses = [status_of(client, f"room-{n}", since) for n in range(4)]
    refused = [s for s in statuses if s["status"] == "CHANNEL_ERROR"]
    assert refused, statuses
    assert all(
        "ClientJoinRateLimitReached: Too many joins per second" in s["error"]
        for s in refused
    )


def test_messages_per_second_close_the_channel(
    clients: ClientFactory, herald_server: Any, tenant: Any
) -> None:
    limit(tenant, max_events_per_second=3)
    client = clients("realtime-js", herald_server, apikey=tenant.publishable_key)
    client.subscribe("chatty", [])
    since = client.mark()
    for n in range(10):
        client.send("send", topic="chatty", event="spam", payload={"n": n})
    system = client.wait_for(
        lambda e: e["event"] == "system" and e["topic"] == "chatty", since=since
    )
    assert system["payload"]["message"] == "Too many messages per second"
    assert status_of(client, "chatty", since)["status"] == "CLOSED"


def test_concurrent_connections_per_tenant(
    clients: ClientFactory, herald_server: Any, make_tenant: Any
) -> None:
    tenant, other = make_tenant("Crowded"), make_tenant("Roomy")
    limit(tenant, max_concurrent_users=1)
    first = clients("realtime-js", herald_server, apikey=tenant.publishable_key)
    first.subscribe("room", ORDERS)
    second = clients("realtime-js", herald_server, apikey=tenant.publishable_key)
    refused = second.subscribe("room", ORDERS, expect="CHANNEL_ERROR")
    assert "4029" in refused["error"]  # closed: ConnectionRateLimitReached
    clients("realtime-js", herald_server, apikey=other.publishable_key).subscribe(
        "room", ORDERS
    )
