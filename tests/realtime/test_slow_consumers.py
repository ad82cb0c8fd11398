"""A client that stops reading is dropped, not buffered without end.

Raw TCP clients that complete the WebSocket handshake, join, and then never
read: against a real server with a small per-socket buffer limit, the server
drops them once their queue passes it, counts them in `/metrics`, and goes on
delivering to a bystander; the memory they held is given back.
"""

from __future__ import annotations

import base64
import os
import re
import socket
import time
from typing import Any

import httpx
import orjson
import pytest

from realtime.services.changes import ChangeInput, live_updates_record
from realtime.services.tenants import TenantCredentials
from tests.wire import Socket

pytestmark = pytest.mark.django_db(transaction=True)

LIMIT = 256 * 1024
# What the memory of a process may still hold after its dropped sockets' went.
SLACK_KB = 8 * 1024
ORDERS = [{"event": "*", "schema": "public", "table": "orders"}]


@pytest.fixture(scope="module")
def server(start_server: Any) -> Any:
    return start_server(HERALD_MAX_SOCKET_BUFFER=str(LIMIT))


def frame(text: str) -> bytes:
    """A masked client text frame (RFC 6455 §5.2)."""
    data, mask = text.encode(), os.urandom(4)
    size = len(data)
    if size < 126:
        header = bytes([0x81, 0x80 | size])
    elif size < 65536:
        header = bytes([0x81, 0x80 | 126]) + size.to_bytes(2, "big")
    else:
        header = bytes([0x81, 0x80 | 127]) + size.to_bytes(8, "big")
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def idle_reader(server: Any, apikey: str) -> socket.socket:
    """A socket that joins `orders` as the key, then never reads again."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /realtime/v1/websocket?apikey={apikey}&vsn=1.0.0 HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101")
    join = {
        "topic": "realtime:orders",
        "event": "phx_join",
        "payload": {"config": {"postgres_changes": ORDERS}},
        "ref": "1",
        "join_ref": "1",
    }
    sock.sendall(frame(orjson.dumps(join).decode()))
    return sock


def dropped(server: Any, creds: TenantCredentials) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    name = f'herald_slow_consumers_closed_total{{tenant="{creds.tenant.slug}"}} '
    found = re.search(re.escape(name) + r"([0-9.]+)", text)
    return float(found.group(1)) if found else 0.0


def rss_kb(server: Any) -> int:
    status = open(f"/proc/{server.process.pid}/status").read()  # noqa: SIM115
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]


def publish_batch(creds: TenantCredentials, start: int) -> list[int]:
    changes = [
        ChangeInput(
            table="orders", type="INSERT", record={"id": start + i, "pad": "x" * 4000}
        )
        for i in range(100)
    ]
    return [u.pk for u in live_updates_record(tenant=creds.tenant, changes=changes)]


def test_a_socket_that_never_reads_its_heartbeat_replies_is_dropped(
    server: Any, tenant: TenantCredentials, sockets: Any
) -> None:
    # First in this module: a process keeps its copy of a tenant's limits for
    # 30 s, and the test database gives each test's tenant the same id.
    tenant.tenant.max_events_per_second = 1_000_000
    tenant.tenant.save()
    bystander: Socket = sockets(tenant.secret_key, server)
    bystander.join("orders", bindings=ORDERS)
    before = dropped(server, tenant)  # tests' tenants share a slug
    idle = idle_reader(server, tenant.secret_key)
    idle.settimeout(30)
    beat = frame('{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"1"}')
    # Heartbeats until the server drops the socket (the kernel's buffers take
    # a few MB of replies first); bounded by count, not by time.
    for _ in range(1000):  # 500,000 heartbeats at most, about 30 MB of replies
        idle.sendall(beat * 500)
        if dropped(server, tenant) > before:
            break
    deadline = time.monotonic() + 120  # the server may still be answering
    while dropped(server, tenant) == before and time.monotonic() < deadline:
        time.sleep(0.2)
    with pytest.raises((ConnectionResetError, BrokenPipeError)):
        for _ in range(100):  # the server hung up: a send fails
            idle.sendall(beat)
            time.sleep(0.05)
    assert dropped(server, tenant) == before + 1
    seqs = publish_batch(tenant, 0)
    assert [f["payload"]["data"]["seq"] for f in bystander.changes(100)] == seqs


def test_a_socket_that_stops_reading_changes_is_dropped(
    server: Any, tenant: TenantCredentials, sockets: Any
) -> None:
    bystander = sockets(tenant.secret_key, server)
    bystander.join("orders", bindings=ORDERS)
    baseline, before = rss_kb(server), dropped(server, tenant)
    idle = [idle_reader(server, tenant.secret_key) for _ in range(4)]
    sent: list[int] = []
    for batch in range(60):  # 24 MB of frames per idle socket at most
        sent += publish_batch(tenant, batch * 100)
        # The bystander reads as it goes: it is never the one dropped.
        got = [f["payload"]["data"]["seq"] for f in bystander.changes(100)]
        assert got == sent[-100:]
        if dropped(server, tenant) >= before + len(idle):
            break
    assert dropped(server, tenant) == before + len(idle)
    for sock in idle:  # the server hung up on each of them
        sock.settimeout(10)
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            while sock.recv(1 << 20):
                pass
            sock.sendall(b"x")
    # Their buffers went back to the system, not just to the allocator.
    deadline = time.monotonic() + 30
    while rss_kb(server) > baseline + SLACK_KB and time.monotonic() < deadline:
        time.sleep(0.5)
    assert rss_kb(server) <= baseline + SLACK_KB
    receives_after = publish_batch(tenant, 100_000)
    got = [f["payload"]["data"]["seq"] for f in bystander.changes(100)]
    assert got == receives_after
