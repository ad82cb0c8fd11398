"""SIGTERM: sockets close with 1012 (clients reconnect) and let go of all they held."""

import signal

import pytest
from websockets.exceptions import ConnectionClosed

from realtime.presence import LEAVE_BOUND
from realtime.shutdown import CLOSE_RESTARTING, SHUTDOWN_TIMEOUT
from subscriptions.models import Subscription
from tests.realtime.test_presence import PRESENCE, event, track

pytestmark = pytest.mark.django_db(transaction=True)


def test_sigterm_closes_with_1012_leaves_presence_and_closes_rows(
    tenant, sockets, start_server
):
    stopping = start_server()
    watcher = sockets(tenant.publishable_key)
    walker = sockets(tenant.publishable_key, server=stopping)
    watcher.join("room", **PRESENCE)
    walker.join("walker-only")
    walker.join("room", presence={"enabled": True, "key": "leaving"})
    track(walker, "room", {"n": 1})
    watcher.recv_until(event("presence_diff"))
    rows = Subscription.objects.filter(
        tenant=tenant.tenant, topic="realtime:walker-only"
    )
    assert rows.get().state == Subscription.State.ACTIVE

    stopping.process.send_signal(signal.SIGTERM)

    with pytest.raises(ConnectionClosed) as closed:
        while True:
            walker.ws.recv(timeout=SHUTDOWN_TIMEOUT + 5)
    assert closed.value.rcvd is not None, "no close frame: the socket was dropped"
    assert closed.value.rcvd.code == CLOSE_RESTARTING
    # The others hear the leave now, not after a crashed process's bound.
    leave = watcher.recv_until(event("presence_diff"), timeout=LEAVE_BOUND / 2)
    assert list(leave["payload"]["leaves"]) == ["leaving"]
    assert stopping.process.wait(SHUTDOWN_TIMEOUT + 10) is not None
    assert rows.get().state != Subscription.State.ACTIVE
