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
(the changes of one publish, or of every layer message the process took in
one go) are joined and written together: one send for all of them, as
Centrifugo batches a client's queued messages into one write.

Anything else (not daphne, closing, compressing, mid-send, TLS) goes the
ordinary ASGI way, in order.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from django.conf import settings
from twisted.internet.tcp import Connection

Send = Callable[[dict[str, Any]], Awaitable[None]]
# autobahn's WebSocketProtocol.STATE_OPEN
STATE_OPEN = 3


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


def buffered(transport: Any) -> int:
    """Bytes Twisted holds for a socket that its kernel has not taken yet."""
    return (
        len(transport.dataBuffer) - transport.offset + transport._tempDataLen
        if transport is not None
        else 0
    )


def overfull(transport: Any) -> bool:
    """A socket whose client stopped reading: its buffer passed the limit."""
    return buffered(transport) > settings.HERALD_MAX_SOCKET_BUFFER


def abort(transport: Any) -> bool:
    """Drop a socket at once; False if it was dropped already.

    A close frame would only queue behind the buffer the client does not
    drain. The consumer hears a disconnect (1006) and releases what it holds;
    the client reconnects and catches up.
    """
    if transport.disconnected or transport._aborting:
        return False
    transport.abortConnection()
    return True


class Outbox:
    """The frames due to sockets over one or more layer messages, held until
    `flush` writes each socket all of its frames, in order, at once.

    Sockets are told apart by their daphne protocol, so the channels one socket
    has joined share its write; targets without one are kept apart.
    """

    __slots__ = ("_due", "overfull")

    def __init__(self) -> None:
        # socket → (a target on it, the frame lists due to it, in order)
        self._due: dict[int, tuple[Any, list[Sequence[Frame]]]] = {}
        # Targets whose socket stopped reading (buffer over the limit), found
        # by the last flush.
        self.overfull: list[Any] = []

    def add(self, frames: Sequence[Frame], targets: Iterable[Any]) -> None:
        """`frames` are due to every target (runs once per socket per message)."""
        due = self._due
        for target in targets:
            protocol = target.protocol
            key = id(target) if protocol is None else id(protocol)
            entry = due.get(key)
            if entry is None:
                due[key] = (target, [frames])
            else:
                entry[1].append(frames)

    def flush(self) -> list[tuple[Any, list[Frame]]]:
        """Write what is due to every open plain daphne socket now, one write
        each; return the others with their frames (to send the ASGI way)."""
        due, self._due = self._due, {}
        self.overfull = []
        limit = settings.HERALD_MAX_SOCKET_BUFFER
        slow: list[tuple[Any, list[Frame]]] = []
        # The sockets of an audience are due the same frame lists: joined once.
        joined: dict[tuple[int, ...], bytes] = {}
        for target, lists in due.values():
            protocol: Any = target.protocol
            transport: Any = target.transport
            if (
                transport is None
                or protocol.state != STATE_OPEN
                or protocol._perMessageCompress is not None
                or protocol.send_queue
            ):
                slow.append((target, [f for frames in lists for f in frames]))
                continue
            key = tuple(map(id, lists))
            data = joined.get(key)
            if data is None:
                data = joined[key] = b"".join(
                    [f.wire(protocol) for frames in lists for f in frames]
                )
            if write(transport, data) > limit:
                self.overfull.append(target)
        return slow


def write(transport: Any, data: bytes) -> int:
    """Send now if nothing is queued before it, else queue it behind; return
    what is left queued for the socket."""
    if (
        transport._tempDataBuffer
        or transport.offset != len(transport.dataBuffer)
        or transport.disconnecting
        or not transport.connected
    ):
        transport.write(data)  # queued behind what is waiting
        return buffered(transport)
    try:
        sent = transport.socket.send(data)
    except (BlockingIOError, InterruptedError):
        sent = 0
    except OSError:
        transport.write(data)  # Twisted meets the error and closes
        return 0
    if sent < len(data):
        transport.write(data[sent:])
        return buffered(transport)
    return 0


def close_frame(send: Send, code: int) -> bool:
    """Send a close frame with any RFC 6455 code; False when not under daphne.

    daphne closes through autobahn's `sendClose`, which accepts only 1000 and
    3000-4999 and raises on 1011 ("internal error") or 1012 ("service
    restart"): those closes never reached the client. autobahn's
    `sendCloseFrame` writes the frame and starts the closing handshake the
    same way, without that check.
    """
    protocol = protocol_of(send)
    if protocol is None:
        return False
    protocol.sendCloseFrame(code=code, isReply=False)
    return True
