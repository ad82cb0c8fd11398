"""A deadline on each HTTP request head, for daphne's Twisted HTTP server.

Twisted's HTTPChannel only has an idle timeout, 60 s, restarted by every byte
received: a client that connects and sends nothing holds its connection for a
minute, and one that sends its request line and headers a byte at a time
holds it for ever (slowloris). WebSocket upgrades are plain HTTP requests
until their head is complete, so the same goes for them.

Here, while the channel reads a request head, bytes do not restart the timer:
the whole head must arrive within HERALD_HANDSHAKE_TIMEOUT seconds of the
connection (or of the previous response, on a kept-alive connection). A body
keeps an idle timeout of the same length. Once a request is in, Twisted lifts
the timer while the application answers; an upgraded WebSocket has daphne's
own limits from there (`--websocket_connect_timeout`, keepalive pings).
"""

from __future__ import annotations

import socket
from typing import Any

from daphne.http_protocol import HTTPFactory
from django.conf import settings
from twisted.protocols.basic import LineReceiver
from twisted.web import http

# A head that arrived in time but is still unread when its deadline passes
# (the server is behind: a reconnect storm's thousands of upgrades) gets this
# many seconds more, as often as MAX_GRACES, for the server to read it.
GRACE = 1.0
MAX_GRACES = 60


class HeadDeadlineChannel(http.HTTPChannel):
    _graces = 0

    def dataReceived(self, data: bytes) -> None:
        if self.line_mode:  # reading a request line or headers
            LineReceiver.dataReceived(self, data)  # no resetTimeout()
        else:
            super().dataReceived(data)

    def timeoutConnection(self) -> None:
        """The deadline is the client's: if its whole head is here, waiting in
        the socket for a busy server to read it, the server is the one late.
        Without this, a storm of 10,000 reconnects lost hundreds of sockets
        whose upgrades had arrived at once, but were read after 10 s."""
        if self.line_mode and self._graces < MAX_GRACES and self._head_unread():
            self._graces += 1
            self.setTimeout(GRACE)
            return
        super().timeoutConnection()

    def _head_unread(self) -> bool:
        """Is the end of a request head among the bytes not read yet?"""
        try:
            handle = self.transport.getHandle()  # type: ignore[union-attr]
            waiting = handle.recv(
                self.totalHeadersSize, socket.MSG_PEEK | socket.MSG_DONTWAIT
            )
        except (AttributeError, OSError):  # not a plain socket, or nothing
            return False
        # Lines already read were whole (LineReceiver keeps the partial one):
        # the head ends at an empty line, right after a line's end.
        seen = self._buffer if self._buffer else b"\r\n"
        return b"\r\n\r\n" in seen[-3:] + waiting


def _channel(factory: http.HTTPFactory) -> Any:
    # What Twisted's own `HTTPFactory.protocol` builds, around our channel:
    # the wrapper is how Twisted picks HTTP/2 when TLS negotiates it.
    return http._GenericHTTPChannelProtocol(HeadDeadlineChannel())


class HeadDeadlineHTTPFactory(HTTPFactory):
    """daphne's HTTP factory, with request heads held to a deadline."""

    protocol = _channel

    def __init__(self, server: Any) -> None:
        super().__init__(server)
        # Twisted hands this to each channel as its timeout (TimeoutMixin).
        self.timeOut = settings.HERALD_HANDSHAKE_TIMEOUT
