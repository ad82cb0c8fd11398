"""Writing frames to many sockets: framed once, written to each in one go.

Under daphne, a socket's ASGI `send` is `partial(server.handle_reply,
protocol)` around an autobahn WebSocketServerProtocol. For fan-out, going
through it costs, per socket: daphne's dispatch, autobahn framing the same
payload again, and a debug log line autobahn formats whether or not it is
logged. Autobahn's own answer for broadcasting is a *prepared message*: the
frame is built once (`factory.prepareMessage`) and its bytes are written to
each connection, which is what `sendPreparedMessage` does minus that log line.

Writing them, `transport.write` only queues: it asks the reactor to watch the
socket, sends on the next turn, then stops watching (two epoll_ctl calls and
a send per socket per frame, most of a fan-out's cost in `make bench`'s
profile). When Twisted has nothing queued for a plain TCP socket, sending at
once is what that turn would do; whatever the kernel does not take is queued
behind it, so the order on the wire holds. Frames due to a socket at once
(the changes of one publish) are joined and written together: one send for
all of them, as Centrifugo batches a client's queued messages into one write.

Anything else (not daphne, closing, compressing, mid-send, TLS) goes the
ordinary ASGI way, in order.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

from twisted.internet.tcp import Connection

Send = Callable[[dict[str, Any]], Awaitable[None]]
# autobahn's WebSocketProtocol.STATE_OPEN
STATE_OPEN = 3


# A fan-out target: it has `protocol` (daphne's, or None) and `transport` (its
# plain TCP transport, or None); the others are sent to through their ASGI send.
T = TypeVar("T")


def protocol_of(send: Send) -> Any | None:
    """daphne's autobahn protocol behind an ASGI send, if that is what it is."""
    if (
        isinstance(send, functools.partial)
        and getattr(send.func, "__name__", "") == "handle_reply"
        and send.args
        and hasattr(send.args[0], "sendPreparedMessage")
    ):
        return send.args[0]
    return None


def tcp_transport_of(protocol: Any) -> Any | None:
    """The protocol's plain TCP transport (none for TLS or anything else)."""
    transport = getattr(protocol, "transport", None)
    if isinstance(transport, Connection) and not transport.TLS:
        return transport
    return None


class Frame:
    """One text frame for many sockets: the autobahn framing is done once."""

    __slots__ = ("_data", "event", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.event = {"type": "websocket.send", "text": text}
        self._data: bytes | None = None

    def wire(self, protocol: Any) -> bytes:
        """The frame's bytes on the wire (the same for every plain socket)."""
        if self._data is None:
            prepared = protocol.factory.prepareMessage(self.text.encode())
            self._data = prepared.payloadHybi
        return self._data


def write_all(frames: Sequence[Frame], targets: Iterable[T]) -> list[T]:
    """Write the frames, in order, to every open plain daphne socket now, in
    one write each; return the other targets (to send to the ASGI way).

    This loop runs once per socket per layer message: it is kept flat.
    """
    slow: list[T] = []
    data: bytes | None = None
    for target in targets:
        protocol: Any = target.protocol  # type: ignore[attr-defined]
        transport: Any = target.transport  # type: ignore[attr-defined]
        if (
            transport is None
            or protocol.state != STATE_OPEN
            or protocol._perMessageCompress is not None
            or protocol.send_queue
        ):
            slow.append(target)
            continue
        if data is None:
            data = b"".join([frame.wire(protocol) for frame in frames])
        if (
            transport._tempDataBuffer
            or transport.offset != len(transport.dataBuffer)
            or transport.disconnecting
            or not transport.connected
        ):
            transport.write(data)  # queued behind what is waiting
            continue
        try:
            sent = transport.socket.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            transport.write(data)  # Twisted meets the error and closes
            continue
        if sent < len(data):
            transport.write(data[sent:])
    return slow
