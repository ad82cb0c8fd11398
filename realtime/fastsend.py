"""Writing one frame to many sockets: framed once, written to each.

Under daphne, a socket's ASGI `send` is `partial(server.handle_reply,
protocol)` around an autobahn WebSocketServerProtocol. For fan-out, going
through it costs, per socket: daphne's dispatch, autobahn framing the same
payload again, and a debug log line autobahn formats whether or not it is
logged. Autobahn's own answer for broadcasting is a *prepared message*: the
frame is built once (`factory.prepareMessage`) and its bytes are written to
each connection, which is what `sendPreparedMessage` does minus that log line.
Anything that is not daphne's plain, uncompressed, open socket goes the
ordinary ASGI way.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

Send = Callable[[dict[str, Any]], Awaitable[None]]


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


class Frame:
    """One text frame for many sockets: the autobahn framing is done once."""

    __slots__ = ("_prepared", "event", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.event = {"type": "websocket.send", "text": text}
        self._prepared: Any = None

    def write_now(self, protocol: Any) -> bool:
        """Write to an open, plain daphne socket; False: use its ASGI send.

        Closing, compressing or mid-send sockets take the ordinary way, which
        keeps their frames in order.
        """
        if (
            protocol is None
            or protocol.state != protocol.STATE_OPEN
            or protocol._perMessageCompress is not None
            or protocol.send_queue
        ):
            return False
        if self._prepared is None:
            self._prepared = protocol.factory.prepareMessage(self.text.encode())
        write_through(protocol.transport, self._prepared.payloadHybi)
        return True


def write_through(transport: Any, data: bytes) -> None:
    """Send now when Twisted has nothing waiting for this socket; else queue.

    `transport.write` only queues: it asks the reactor to watch the socket
    for writing, sends on the next turn, then stops watching (two epoll_ctl
    calls and a send per socket per frame, most of the cost of a fan-out in
    `make bench`'s profile). With nothing queued, sending at once is what that
    turn would do; whatever the kernel does not take is queued behind it, so
    the order on the wire holds. TLS and unknown transports just queue.
    """
    idle = (
        hasattr(transport, "writeSomeData")
        and not getattr(transport, "TLS", False)
        and transport.connected
        and not transport.disconnecting
        and not getattr(transport, "_tempDataBuffer", True)
        and getattr(transport, "offset", -1) == len(transport.dataBuffer)
    )
    if idle:
        sent = transport.writeSomeData(data)
        if isinstance(sent, int):  # else a ConnectionLost: Twisted will see it
            if sent < len(data):
                transport.write(data[sent:])
            return
    transport.write(data)
