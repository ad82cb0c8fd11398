"""A clean stop: on SIGTERM every socket closes with 1012 and lets go of all it held.

daphne stops on SIGTERM by cancelling every application: sockets ended with
no close frame (1006 at the client), their subscription rows stayed active
(so /api/realtime/status went on counting them), and the presences they
tracked lingered until another process's sweep (realtime.presence.LEAVE_BOUND).

Instead, before the reactor shuts down, each socket of the process is sent a
close frame with 1012 ("service restart", on which supabase-js, realtime-js
and the Python client reconnect) and released as on any disconnect: its
channels are left (presence leaves at once for the other members), its
subscription rows are closed and its connection slot is freed. The reactor
waits for that, at most SHUTDOWN_TIMEOUT seconds.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from realtime.hub import running_hubs

logger = logging.getLogger(__name__)

# RFC 6455 "service restart": the client should reconnect.
CLOSE_RESTARTING = 1012
# Seconds a stopping process gives its sockets to close and be released.
SHUTDOWN_TIMEOUT = 10.0


def install() -> None:
    """Run `close_all` before the reactor shuts down (call before daphne starts).

    Registered ahead of daphne's own trigger, which cancels the applications:
    the release below does not run inside them, so it is not cancelled.
    """
    from twisted.internet import reactor

    # zope interfaces declare methods without `self`: mypy miscounts them.
    core: Any = reactor
    core.addSystemEventTrigger("before", "shutdown", _before_shutdown)


def _before_shutdown() -> Any:
    from twisted.internet.defer import Deferred

    hubs = running_hubs()
    if not hubs:
        return None
    return Deferred.fromFuture(asyncio.ensure_future(close_all()))


async def close_all() -> int:
    """Close and release every socket of this process; how many there were."""
    sockets = [socket for hub in running_hubs() for socket in hub.sockets.values()]
    if not sockets:
        return 0
    logger.info(
        "Shutting down: closing %d sockets with %d", len(sockets), CLOSE_RESTARTING
    )
    try:
        await asyncio.wait_for(
            asyncio.gather(
                *(socket.shut_down(CLOSE_RESTARTING) for socket in sockets),
                return_exceptions=True,
            ),
            SHUTDOWN_TIMEOUT,
        )
    except TimeoutError:
        logger.warning("Shutdown: sockets not all released in %ss", SHUTDOWN_TIMEOUT)
    return len(sockets)
