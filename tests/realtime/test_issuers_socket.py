"""Issuer tokens over a real socket: joins, refreshes and refusals on the wire.

The server is another process (tests.server); it fetches the JWKS this test
serves on loopback, with its own key cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from realtime.auth import token_mint
from realtime.services.changes import ChangeInput, live_updates_record
from realtime.services.issuers import trusted_issuer_add
from realtime.services.tenants import TenantCredentials, row_policy_add
from tests.issuers import (
    JwksServer,
    KeyPair,
    claims,
    forged_hs256,
    jwks_of,
    key_pair,
    unsigned,
)
from tests.wire import Socket

pytestmark = pytest.mark.django_db(transaction=True)

ISS = "https://idp.example.com/"
ORDERS = [{"event": "*", "schema": "public", "table": "orders"}]


@pytest.fixture
def serve() -> Iterator[Callable[..., JwksServer]]:
    servers: list[JwksServer] = []

    def start(*pairs: KeyPair) -> JwksServer:
        servers.append(JwksServer(jwks_of(*pairs)))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def shop(creds: TenantCredentials, url: str, iss: str = ISS) -> None:
    trusted_issuer_add(tenant=creds.tenant, issuer=iss, jwks_url=url)
    row_policy_add(
        tenant=creds.tenant,
        table="orders",
        role="authenticated",
        rules=[{"column": "site_id", "claim": "site_id"}],
    )


def publish(creds: TenantCredentials, row_id: int, site_id: int) -> int:
    change = ChangeInput(
        table="orders", type="INSERT", record={"id": row_id, "site_id": site_id}
    )
    return live_updates_record(tenant=creds.tenant, changes=[change])[0].pk


def user(pair: KeyPair, site_id: int, iss: str = ISS, **extra: Any) -> str:
    return pair.sign(
        claims(iss, sub="u1", role="authenticated", site_id=site_id, **extra)
    )


def records(socket: Socket, count: int) -> list[dict[str, Any]]:
    return [f["payload"]["data"]["record"] for f in socket.changes(count)]


@pytest.mark.parametrize("kty", ["RSA", "EC", "OKP"])
def test_a_socket_joins_with_an_issuer_token_and_sees_its_rows(
    tenant, sockets, serve, kty
):
    pair = key_pair(kty)
    shop(tenant, serve(pair).url)
    socket = sockets(tenant.publishable_key)
    joined = socket.join("shop", bindings=ORDERS, token=user(pair, site_id=2))
    assert joined["payload"]["status"] == "ok", joined
    publish(tenant, 1, site_id=1)
    publish(tenant, 2, site_id=2)
    assert records(socket, 1) == [{"id": 2, "site_id": 2}]


@pytest.mark.parametrize("attack", ["alg-none", "hs256-with-pem", "kid-of-b"])
def test_forged_issuer_tokens_are_refused_at_join(tenant, sockets, serve, attack):
    a, b = key_pair("RSA"), key_pair("EC")
    shop(tenant, serve(a).url)
    trusted_issuer_add(tenant=tenant.tenant, issuer="https://b/", jwks_url=serve(b).url)
    payload = claims(ISS, sub="u1", role="authenticated", site_id=1)
    token = {
        "alg-none": lambda: unsigned(payload, a.kid),
        "hs256-with-pem": lambda: forged_hs256(payload, a.public_pem(), a.kid),
        "kid-of-b": lambda: b.sign(payload),
    }[attack]()
    socket = sockets(tenant.publishable_key)
    # B's keys are in the server's cache first, as they would be in production.
    ok = socket.join("b", bindings=ORDERS, token=user(b, 1, iss="https://b/"))
    assert ok["payload"]["status"] == "ok"
    refused = socket.join("shop", bindings=ORDERS, token=token)
    assert refused["payload"]["status"] == "error"
    assert refused["payload"]["response"]["reason"].startswith("JwtSignatureError: ")


def test_a_jwks_too_slow_to_answer_refuses_the_join_without_hanging(
    tenant, sockets, serve
):
    pair = key_pair("RSA")
    server = serve(pair)
    server.mode = "slow"
    shop(tenant, server.url)
    socket = sockets(tenant.publishable_key)
    started = time.monotonic()
    refused = socket.join("shop", bindings=ORDERS, token=user(pair, 1))
    assert refused["payload"]["response"]["reason"].startswith("JwtSignerError: ")
    assert time.monotonic() - started < 9
    # The socket still works with the tenant's own key.
    assert socket.join("other", token=tenant.secret_key)["payload"]["status"] == "ok"


def test_an_access_token_refresh_with_a_forged_token_closes_the_channel(
    tenant, sockets, serve
):
    pair = key_pair("EC")
    shop(tenant, serve(pair).url)
    socket = sockets(tenant.publishable_key)
    socket.join("shop", bindings=ORDERS, token=user(pair, site_id=1))
    fresh = user(pair, site_id=1, nbf=int(time.time()) - 1)
    socket.push("realtime:shop", "access_token", {"access_token": fresh}, join_ref="1")
    publish(tenant, 1, site_id=1)
    assert records(socket, 1) == [{"id": 1, "site_id": 1}]
    forged = forged_hs256(
        claims(ISS, role="authenticated", site_id=1), pair.public_pem(), pair.kid
    )
    socket.push("realtime:shop", "access_token", {"access_token": forged}, join_ref="1")
    closed = socket.recv_until(lambda f: f["event"] == "phx_close")
    assert closed["topic"] == "realtime:shop"


@pytest.mark.parametrize(
    ("kind", "kty"),
    [
        ("supabase-js", "RSA"),
        ("supabase-js", "EC"),
        ("realtime-js-v2", "EC"),
        ("realtime-js-v2", "OKP"),
        ("python", "RSA"),
        ("python", "OKP"),
    ],
)
def test_the_official_clients_with_an_issuer_token_receive_what_it_allows(
    tenant, herald_server, serve, kind, kty
):
    """An app whose users sign in elsewhere: supabase-js's `accessToken` option,
    realtime-js's and the Python client's setAuth; RS256, ES256 and EdDSA."""
    from tests.realtime_clients import client_factory

    pair = key_pair(kty)
    trusted_issuer_add(tenant=tenant.tenant, issuer=ISS, jwks_url=serve(pair).url)
    row_policy_add(
        tenant=tenant.tenant,
        table="orders",
        role="authenticated",
        rules=[{"column": "site_id", "claim": "site_ids", "any": True}],
    )
    token = pair.sign(claims(ISS, sub="u1", role="authenticated", site_ids=[1, 2]))
    with client_factory() as open_client:
        client = open_client(
            kind, herald_server, apikey=tenant.publishable_key, token=token
        )
        client.subscribe("shop", ORDERS)
        since = client.mark()
        publish(tenant, 1, site_id=3)
        publish(tenant, 2, site_id=2)
        got = client.change(lambda e: True, since=since)
        new = got["payload"].get("new") or got["payload"]["data"]["record"]
        assert new == {"id": 2, "site_id": 2}
        assert len(client.matching(lambda e: e["event"] == "postgres_changes")) == 1
        # A token of the same issuer's name signed with another key: refused.
        forger = key_pair(kty)
        forged = forger.sign(claims(ISS, sub="u1", role="authenticated", site_ids=[3]))
        other = open_client(
            kind, herald_server, apikey=tenant.publishable_key, token=forged
        )
        other.subscribe("shop", ORDERS, expect="CHANNEL_ERROR")


def test_a_slow_jwks_does_not_hold_up_other_tenants_joins(make_tenant, sockets, serve):
    slow_tenant, other = make_tenant("Slow"), make_tenant("Other")
    pair = key_pair("RSA")
    server = serve(pair)
    server.mode = "slow"
    shop(slow_tenant, server.url)
    waiting = sockets(slow_tenant.publishable_key)
    payload = {"config": {"postgres_changes": ORDERS}, "access_token": user(pair, 1)}
    ref = waiting.push("realtime:shop", "phx_join", payload, join_ref="1", ref="1")
    time.sleep(0.5)  # the slow tenant's fetch is under way
    bystander = sockets(other.publishable_key)
    started = time.monotonic()
    token = token_mint(tenant=other.tenant, role="authenticated", ttl=60)
    assert bystander.join("room", token=token)["payload"]["status"] == "ok"
    assert time.monotonic() - started < 2
    refused = waiting.reply_to(ref)
    assert refused["payload"]["response"]["reason"].startswith("JwtSignerError: ")


def test_a_removed_issuer_is_refused_at_the_next_join_on_every_process(
    tenant, sockets, serve, start_server
):
    """Servers keep a tenant's issuers; removing one tells them all at once."""
    from realtime.models import TrustedIssuer
    from realtime.services.issuers import trusted_issuer_remove

    pair = key_pair("RSA")
    shop(tenant, serve(pair).url)
    other = start_server()
    here, there = (
        sockets(tenant.publishable_key),
        sockets(tenant.publishable_key, other),
    )
    for ws in (here, there):  # each process reads the issuer and its keys
        assert ws.join("a", token=user(pair, 1))["payload"]["status"] == "ok"
        assert ws.join("b", token=user(pair, 1))["payload"]["status"] == "ok"
    trusted_issuer_remove(issuer=TrustedIssuer.objects.get(tenant=tenant.tenant))
    deadline = time.monotonic() + 10  # the order crosses Redis
    for ws in (here, there):
        while True:  # one channel, rejoined: no channel limit is reached
            reply = ws.join("c", token=user(pair, 1))
            ws.push("realtime:c", "phx_leave", {}, join_ref=ws.join_ref)
            if reply["payload"]["status"] == "error" or time.monotonic() > deadline:
                break
            time.sleep(0.1)  # under the socket's message rate
        assert reply["payload"]["status"] == "error"
        assert "JWT" in reply["payload"]["response"]["reason"], reply
