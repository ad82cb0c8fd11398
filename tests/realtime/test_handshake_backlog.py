"""A request head that arrived in time is not cut off because the server was
slow to read it (a reconnect storm), while a half-sent one still is.

The deadline logic of realtime/handshake.py on a real socket pair, with
Twisted's test clock standing in for time.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from realtime.handshake import GRACE, MAX_GRACES, HeadDeadlineChannel

DEADLINE = 10.0
HEAD = (
    b"GET /realtime/v1/websocket?vsn=1.0.0 HTTP/1.1\r\n"
    b"Host: 127.0.0.1\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
)


class SocketTransport(StringTransport):
    """What the channel writes is kept; its socket is a real one."""

    def __init__(self, handle: socket.socket) -> None:
        super().__init__()
        self.handle = handle

    def getHandle(self) -> socket.socket:
        return self.handle


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    server, client = socket.socketpair()
    yield server, client
    server.close()
    client.close()


def channel_on(server: socket.socket) -> tuple[HeadDeadlineChannel, Clock]:
    channel = HeadDeadlineChannel()
    channel.timeOut = DEADLINE
    clock = Clock()
    channel.callLater = clock.callLater  # type: ignore[method-assign]
    channel.makeConnection(SocketTransport(server))
    return channel, clock


def cut_off(channel: HeadDeadlineChannel) -> bool:
    return bool(channel.transport.disconnecting)


def test_a_whole_head_waiting_unread_outlives_the_deadline(pair) -> None:
    server, client = pair
    channel, clock = channel_on(server)
    client.sendall(HEAD + b"\r\n")  # all of it, at once; the server is busy
    clock.advance(DEADLINE + 5 * GRACE)
    assert not cut_off(channel)


def test_the_grace_for_an_unread_head_has_an_end(pair) -> None:
    server, client = pair
    channel, clock = channel_on(server)
    client.sendall(HEAD + b"\r\n")
    clock.advance(DEADLINE)
    for _ in range(MAX_GRACES + 1):
        clock.advance(GRACE)
    assert cut_off(channel)


@pytest.mark.parametrize(
    "sent", [b"", HEAD, HEAD[:20]], ids=["nothing", "no-blank-line", "a-part"]
)
def test_a_head_not_all_sent_is_cut_off_at_the_deadline(pair, sent: bytes) -> None:
    server, client = pair
    channel, clock = channel_on(server)
    client.sendall(sent)
    clock.advance(DEADLINE)
    assert cut_off(channel)


def test_a_head_read_in_part_and_finished_unread_outlives_the_deadline(pair) -> None:
    server, client = pair
    channel, clock = channel_on(server)
    channel.dataReceived(HEAD)  # read: the request line and headers
    client.sendall(b"\r\n")  # the blank line that ends it, not read yet
    clock.advance(DEADLINE)
    assert not cut_off(channel)
