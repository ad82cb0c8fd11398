"""Half-open handshakes are cut off; finished ones are not (a real server)."""

import socket
import time

import httpx
import pytest

from tests.wire import Socket

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 2  # HERALD_HANDSHAKE_TIMEOUT of the server under test
# Twisted checks the deadline once it passes; allow for a busy 2-core machine.
CUT_OFF_WITHIN = TIMEOUT + 4

UPGRADE_HEAD = (
    b"GET /realtime/v1/websocket?vsn=1.0.0 HTTP/1.1\r\n"
    b"Host: 127.0.0.1\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
)


@pytest.fixture(scope="module")
def strict_server(start_server):
    server = start_server(HERALD_HANDSHAKE_TIMEOUT=str(TIMEOUT))
    yield server
    server.stop()


def seconds_until_closed(server, send=b"", trickle=b"", limit=15.0):
    """Open TCP, send `send`, then a byte of `trickle` every half second."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
        conn.sendall(send)
        conn.settimeout(0.5)
        while (elapsed := time.monotonic() - started) < limit:
            try:
                if trickle:
                    conn.sendall(trickle[:1])
                    trickle = trickle[1:] or b"a"
                if conn.recv(4096) == b"":
                    return elapsed
            except TimeoutError:
                continue
            except (ConnectionResetError, BrokenPipeError):
                return elapsed
    return None


def test_a_connection_that_sends_nothing_is_closed(strict_server):
    closed = seconds_until_closed(strict_server)
    assert closed is not None and closed < CUT_OFF_WITHIN, closed


def test_an_upgrade_request_trickled_byte_by_byte_is_closed(strict_server):
    closed = seconds_until_closed(
        strict_server, send=UPGRADE_HEAD, trickle=b"X-Slow: " + b"a" * 100
    )
    assert closed is not None and closed < CUT_OFF_WITHIN, closed


def test_an_upgrade_request_that_stops_halfway_is_closed(strict_server):
    closed = seconds_until_closed(strict_server, send=UPGRADE_HEAD)
    assert closed is not None and closed < CUT_OFF_WITHIN, closed


def test_finished_handshakes_are_not_cut_off(strict_server, make_tenant):
    tenant = make_tenant("Patient")
    ws = Socket(strict_server.ws_url, tenant.secret_key)
    assert ws.join("room")["payload"]["status"] == "ok"
    with httpx.Client(base_url=strict_server.url) as http:
        assert http.get("/healthz").status_code == 200
        time.sleep(TIMEOUT + 2)
        # The socket lives on past the deadline, and a kept-alive HTTP
        # connection that went quiet is simply opened again.
        ref = ws.push("phoenix", "heartbeat", {})
        assert ws.reply_to(ref)["payload"]["status"] == "ok"
        assert http.get("/healthz").status_code == 200
    ws.close()
