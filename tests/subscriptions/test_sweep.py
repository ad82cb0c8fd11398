"""A server process killed with SIGKILL: the worker closes its subscriptions."""

import time

import pytest

from subscriptions.models import Subscription
from tests.server import manage
from tests.wire import Socket

pytestmark = pytest.mark.django_db(transaction=True)

STALE_AFTER = 5  # seconds, for this test's worker run


def test_a_killed_process_subscriptions_are_closed_by_the_worker(
    tenant, herald_server, start_server, server_env
):
    doomed = start_server()
    ghost = Socket(doomed.ws_url, tenant.secret_key)
    ghost.join("one")
    ghost.join("two")
    assert Subscription.objects.filter(state="active").count() == 2
    doomed.kill()
    time.sleep(STALE_AFTER + 1)
    alive = Socket(herald_server.ws_url, tenant.secret_key)
    alive.join("alive")
    env = {**server_env, "HERALD_SUBSCRIPTION_STALE_AFTER": str(STALE_AFTER)}
    out = manage(env, "realtime_maintenance", "--once", "--step", "stale")
    assert "stale=2" in out
    states = dict(Subscription.objects.values_list("topic", "state"))
    assert states == {
        "realtime:one": "closed",
        "realtime:two": "closed",
        "realtime:alive": "active",
    }
    alive.close()
