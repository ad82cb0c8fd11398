"""What the socket endpoint refuses, and that a refusal harms nobody else.

Raw frames over `websockets` against a real server process: handshakes with
bad credentials, joins with bad tokens, and frames no client should send.
After each refused frame, the socket that sent it (when it stays open) and a
bystander socket still get heartbeat replies and live changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import orjson
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from realtime.auth import token_mint
from realtime.services.changes import ChangeInput, live_updates_record
from realtime.services.tenants import TenantCredentials
from tests.wire import Frame, Socket

pytestmark = pytest.mark.django_db(transaction=True)

TOPIC = "realtime:shop"
SITE_1 = [
    {"event": "*", "schema": "public", "table": "orders", "filter": "site_id=eq.1"}
]
MAX_FRAME_BYTES = 5_000_000
CLOSE_MESSAGE_TOO_BIG = 1009


@pytest.fixture
def sockets(herald_server: Any) -> Iterator[Callable[..., Socket]]:
    opened: list[Socket] = []

    def open_socket(apikey: str, *, vsn: str = "1.0.0") -> Socket:
        opened.append(Socket(herald_server.ws_url, apikey, vsn=vsn))
        return opened[-1]

    yield open_socket
    for socket in opened:
        socket.close()


def handshake_status(url: str) -> int:
    """The HTTP status a refused WebSocket upgrade was answered with."""
    with pytest.raises(InvalidStatus) as refused:
        connect(url, open_timeout=10).close()
    return refused.value.response.status_code


def publish(creds: TenantCredentials, row_id: int, site_id: int = 1) -> int:
    """A change on `orders` committed in this process; returns its cursor."""
    change = ChangeInput(
        table="orders", type="INSERT", record={"id": row_id, "site_id": site_id}
    )
    return live_updates_record(tenant=creds.tenant, changes=[change])[0].pk


def assert_alive(socket: Socket, seq: int, timeout: float = 10) -> None:
    """The socket answers a heartbeat and gets the change with cursor `seq`.

    Both are awaited together: the change may come before the reply or after.
    The first change the socket gets must be this one, on the joined topic.
    """
    ref = socket.push("phoenix", "heartbeat", {})
    reply, change, seen = None, None, []
    deadline = time.monotonic() + timeout
    while reply is None or change is None:
        frame = socket.recv(timeout=max(deadline - time.monotonic(), 0.01))
        seen.append(frame["raw"])
        if frame["event"] == "phx_reply" and frame["ref"] == ref:
            reply = frame
        elif frame["event"] == "postgres_changes" and change is None:
            change = frame
    assert (reply["topic"], reply["payload"]) == (
        "phoenix",
        {"status": "ok", "response": {}},
    ), seen
    assert change["topic"] == TOPIC, seen
    assert change["payload"]["data"]["seq"] == seq, seen


def assert_joins(socket: Socket, *, token: str | None = None) -> None:
    reply = socket.join("shop", bindings=SITE_1, token=token)
    assert reply["payload"]["status"] == "ok", reply["raw"]


def joined(open_socket: Callable[..., Socket], key: str, vsn: str) -> Socket:
    socket = open_socket(key, vsn=vsn)
    assert_joins(socket)
    return socket


# --- Handshake ----------------------------------------------------------------


def foreign_token(creds: TenantCredentials, *, secret: str) -> str:
    """A token naming `creds`'s tenant but signed with another secret."""
    claims = {"role": "service_role", "ref": creds.tenant.slug, "exp": 2**31}
    return jwt.encode(claims, secret, algorithm="HS256")


@pytest.mark.parametrize(
    "apikey",
    ["unknown-key", "pk_" + "x" * 43, "sk_" + "x" * 43, "forged-token", "missing"],
)
def test_a_bad_apikey_is_refused_at_the_handshake(
    apikey: str, herald_server: Any, make_tenant: Any
) -> None:
    creds, other = make_tenant("A"), make_tenant("B")
    if apikey == "forged-token":
        apikey = foreign_token(creds, secret=other.tenant.jwt_secret)
    query = "vsn=1.0.0" if apikey == "missing" else f"apikey={apikey}&vsn=1.0.0"
    url = f"{herald_server.ws_url}/realtime/v1/websocket?{query}"
    assert handshake_status(url) == 403


def test_an_expired_token_as_apikey_is_refused_at_the_handshake(
    herald_server: Any, tenant: TenantCredentials
) -> None:
    expired = token_mint(tenant=tenant.tenant, role="anon", ttl=-5)
    url = f"{herald_server.ws_url}/realtime/v1/websocket?apikey={expired}"
    assert handshake_status(url) == 403


@pytest.mark.parametrize("vsn", ["3.0.0", "1.1.0", "2", "two", "2.0.0-rc1"])
def test_an_unknown_vsn_is_refused_at_the_handshake(
    vsn: str, herald_server: Any, tenant: TenantCredentials
) -> None:
    base = f"{herald_server.ws_url}/realtime/v1/websocket?apikey="
    assert handshake_status(f"{base}{tenant.publishable_key}&vsn={vsn}") == 403
    # The same key with a known vsn is let in: the vsn was the reason.
    connect(f"{base}{tenant.publishable_key}&vsn=2.0.0", open_timeout=10).close()


# --- Join ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("forged", "JwtSignatureError: Failed to validate JWT signature"),
        ("other-tenant", "JwtSignatureError: Failed to validate JWT signature"),
        ("expired", "InvalidJWTToken: Token has expired"),
        ("no-exp", "InvalidJWTToken: Fields `role` and `exp` are required in JWT"),
        ("garbage", "MalformedJWT: The token provided is not a valid JWT"),
    ],
)
def test_a_join_with_a_bad_access_token_is_refused(
    token: str, reason: str, sockets: Callable[..., Socket], make_tenant: Any
) -> None:
    creds, other = make_tenant("A"), make_tenant("B")
    access_token = {
        "forged": foreign_token(creds, secret=other.tenant.jwt_secret),
        "other-tenant": token_mint(tenant=other.tenant, role="service_role", ttl=60),
        "expired": token_mint(tenant=creds.tenant, role="service_role", ttl=-5),
        "no-exp": jwt.encode({"role": "anon"}, creds.tenant.jwt_secret),
        "garbage": "not-a-jwt",
    }[token]
    socket = sockets(creds.publishable_key)
    refused = socket.join("vault", bindings=SITE_1, token=access_token)
    assert refused["topic"] == "realtime:vault"
    assert refused["payload"]["status"] == "error"
    assert refused["payload"]["response"]["reason"].startswith(reason)

    # The socket itself is fine, and the first change it gets is on the
    # channel that was let in, not on the refused one.
    assert_joins(socket, token=creds.secret_key)
    assert_alive(socket, publish(creds, 1))


def test_another_tenants_key_as_access_token_is_refused(
    sockets: Callable[..., Socket], make_tenant: Any
) -> None:
    creds, other = make_tenant("A"), make_tenant("B")
    socket = sockets(creds.publishable_key)
    refused = socket.join("shop", bindings=SITE_1, token=other.secret_key)
    assert refused["payload"]["status"] == "error"
    assert refused["payload"]["response"]["reason"]

    assert_joins(socket, token=creds.secret_key)
    publish(other, 1)
    # B's change came first: had it crossed over, it would be the one received.
    assert_alive(socket, publish(creds, 2))


# --- Malformed frames ---------------------------------------------------------

PHOENIX = ("phoenix", None)


def kind3(*, join_ref: bytes, ref: bytes, topic: bytes, event: bytes) -> bytes:
    """A kind-3 header whose lengths say the topic is longer than the frame."""
    sizes = (len(join_ref), len(ref), 200, len(event), 0)
    return bytes((3, *sizes, 1)) + join_ref + ref + topic + event + b"{}"


# (case, vsn, frame to send, (topic, ref) the error reply should carry)
MALFORMED: list[tuple[str, str, str | bytes, tuple[str, str | None]]] = [
    ("invalid json v1", "1.0.0", '{"topic": "phoenix", "event": ', PHOENIX),
    ("invalid json v2", "2.0.0", '[null, "1", "phoenix", ', PHOENIX),
    ("v2 array of 4", "2.0.0", '[null,"7","phoenix","heartbeat"]', PHOENIX),
    ("v2 array of 6", "2.0.0", '[null,"7","phoenix","heartbeat",{},1]', PHOENIX),
    (
        "object on a v2 socket",
        "2.0.0",
        '{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"7"}',
        PHOENIX,
    ),
    ("array on a v1 socket", "1.0.0", '[null,"7","phoenix","heartbeat",{}]', PHOENIX),
    (
        "v1 object without ref",
        "1.0.0",
        '{"topic":"phoenix","event":"heartbeat"}',
        PHOENIX,
    ),
    (
        "numeric topic",
        "1.0.0",
        '{"topic":5,"event":"x","payload":{},"ref":"7"}',
        PHOENIX,
    ),
    (
        "unknown event on a joined topic v1",
        "1.0.0",
        '{"topic":"realtime:shop","event":"nonsense","payload":{},"ref":"9","join_ref":"1"}',
        (TOPIC, "9"),
    ),
    (
        "unknown event on a joined topic v2",
        "2.0.0",
        '["1","9","realtime:shop","nonsense",{}]',
        (TOPIC, "9"),
    ),
    (
        "event on a topic not joined",
        "1.0.0",
        '{"topic":"realtime:nowhere","event":"access_token","payload":{},"ref":"9"}',
        ("realtime:nowhere", "9"),
    ),
    (
        "join outside realtime:",
        "1.0.0",
        '{"topic":"room:lobby","event":"phx_join","payload":{},"ref":"9","join_ref":"9"}',
        ("room:lobby", "9"),
    ),
    (
        "join outside realtime: v2",
        "2.0.0",
        '["9","9","room:lobby","phx_join",{}]',
        ("room:lobby", "9"),
    ),
    ("binary on a v1 socket", "1.0.0", b"\x03\x00\x00\x00\x00\x00\x01{}", PHOENIX),
    ("binary garbage", "2.0.0", b"\x07\xff\xfe\x00garbage", PHOENIX),
    ("empty binary", "2.0.0", b"", PHOENIX),
    (
        "kind 3 whose lengths lie",
        "2.0.0",
        kind3(join_ref=b"1", ref=b"9", topic=b"realtime:shop", event=b"x"),
        PHOENIX,
    ),
]


def error_reply(socket: Socket) -> Frame:
    return socket.recv_until(
        lambda f: f["event"] == "phx_reply" and f["payload"]["status"] == "error"
    )


@pytest.mark.parametrize(
    ("vsn", "frame", "answered_on"),
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
def test_a_malformed_frame_gets_an_error_and_harms_nobody(
    vsn: str,
    frame: str | bytes,
    answered_on: tuple[str, str | None],
    sockets: Callable[..., Socket],
    tenant: TenantCredentials,
) -> None:
    socket = joined(sockets, tenant.secret_key, vsn)
    bystander = joined(sockets, tenant.secret_key, vsn)
    socket.ws.send(frame)

    reply = error_reply(socket)
    assert (reply["topic"], reply["ref"]) == answered_on, reply["raw"]
    reason = reply["payload"]["response"]["reason"]
    assert isinstance(reason, str) and reason, reply["raw"]
    if answered_on[0] in {"room:lobby", "realtime:nowhere"}:
        assert reply["payload"]["response"] == {"reason": "unmatched topic"}

    seq = publish(tenant, 1)
    assert_alive(socket, seq)
    assert_alive(bystander, seq)


def test_an_oversized_frame_closes_only_its_own_socket(
    sockets: Callable[..., Socket], tenant: TenantCredentials
) -> None:
    socket = joined(sockets, tenant.secret_key, "1.0.0")
    bystander = joined(sockets, tenant.secret_key, "2.0.0")
    padding = "x" * MAX_FRAME_BYTES
    frame = {"topic": TOPIC, "event": "nonsense", "payload": {"pad": padding}}
    with pytest.raises(ConnectionClosed) as closed:
        socket.ws.send(orjson.dumps({**frame, "ref": "9", "join_ref": "1"}).decode())
        socket.recv_until(lambda f: False, timeout=10)
    # A server that stops reading mid-frame may reset the connection before
    # its close frame is read; a close frame that does arrive must say why
    # (1009, as Supabase Realtime's Cowboy sends), not report a crash (1011).
    if closed.value.rcvd is not None:
        assert closed.value.rcvd.code == CLOSE_MESSAGE_TOO_BIG, closed.value
    assert_alive(bystander, publish(tenant, 1))


def test_a_frame_at_the_size_limit_is_still_read(
    sockets: Callable[..., Socket], tenant: TenantCredentials
) -> None:
    socket = joined(sockets, tenant.secret_key, "1.0.0")
    prefix = '{"topic":"phoenix","event":"heartbeat","ref":"77","payload":{"pad":"'
    suffix = '"}}'
    frame = prefix + "x" * (MAX_FRAME_BYTES - len(prefix) - len(suffix)) + suffix
    assert len(frame.encode()) == MAX_FRAME_BYTES
    socket.ws.send(frame)
    assert socket.reply_to("77")["payload"]["status"] == "ok"
    assert_alive(socket, publish(tenant, 1))
