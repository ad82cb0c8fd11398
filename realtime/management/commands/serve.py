"""Serve Herald with daphne, with the options a realtime server needs."""

import gc
from typing import Any

import daphne.server
from daphne.cli import CommandLineInterface
from django.core.management.base import BaseCommand, CommandParser

from realtime.handshake import HeadDeadlineHTTPFactory
from realtime.protocol import MAX_FRAME_BYTES

# Connections the kernel holds for daphne to accept. Twisted listens with 50:
# in a reconnect storm the kernel dropped the SYNs past it, and each of those
# clients waited a second or more to try again. (Linux caps it at somaxconn.)
LISTEN_BACKLOG = 4096
# Seconds a socket may wait for its connect to be answered (its key resolved,
# its limits counted). daphne's 5 s refused the later sockets of a reconnect
# storm while the first were served; a client cannot hold a socket here (its
# request head is in, under HERALD_HANDSHAKE_TIMEOUT), only the server's queue.
CONNECT_TIMEOUT = 60


def listen_endpoint(host: str, port: int) -> str:
    """daphne's `-b HOST -p PORT`, as a Twisted endpoint with our backlog."""
    interface = host.strip("[]").replace(":", r"\:")
    return f"tcp:port={port}:interface={interface}:backlog={LISTEN_BACKLOG}"


def daphne_args(*, host: str, port: int, extra: list[str]) -> list[str]:
    return [
        "-e",
        listen_endpoint(host, port),
        "--websocket_connect_timeout",
        str(CONNECT_TIMEOUT),
        # Supabase accepts frames up to 5 MB; daphne's default is 1 MiB and it
        # drops the connection past it. daphne closes with 1009 over this.
        "--websocket-max-message-size",
        str(MAX_FRAME_BYTES),
        "--websocket-max-frame-size",
        str(MAX_FRAME_BYTES),
        # daphne closes every socket after a day by default; clients hold theirs.
        "--websocket_timeout",
        "-1",
        *extra,
        "config.asgi:application",
    ]


def gc_tune() -> None:
    """Fewer, cheaper full collections for a process holding many sockets.

    Every socket keeps long-lived objects; with Python's default thresholds
    full collections of a few hundred thousand of them ran every few seconds
    under load and took 150-700 ms each, setting the delivery p99 (measured
    with `make bench`). What Django loaded at start-up is frozen out of them.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


class Command(BaseCommand):
    help = "Serve HTTP and WebSockets (daphne) on HOST:PORT."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "daphne_options", nargs="*", help="more daphne options, after --"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        gc_tune()
        # daphne builds its HTTP factory from this module-level name inside
        # Server.run(), with no option to pass another: replace it here, in the
        # one process that serves, so half-sent request heads are cut off.
        daphne.server.HTTPFactory = HeadDeadlineHTTPFactory
        # Sockets close with 1012 and are released on SIGTERM, not dropped.
        # (Imported here: daphne_args is imported before Django is set up.)
        from realtime import shutdown

        shutdown.install()
        CommandLineInterface().run(
            daphne_args(
                host=options["host"],
                port=options["port"],
                extra=options["daphne_options"],
            )
        )
