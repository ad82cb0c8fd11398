"""Faults survived: Redis restarted mid-stream, PostgreSQL down.

Each test runs a server on services of its own, so an outage touches nothing
else in the suite. Loops are bounded in count and time; loopback only.
"""

import json
import time

import httpx
import psycopg
import pytest

from realtime.models import LiveUpdate
from tests.server import manage
from tests.services import Postgres, Redis
from tests.wire import Socket

ORDERS = [{"event": "*", "schema": "public", "table": "orders"}]
# How soon delivery must resume once Redis is back: the hub checks Redis'
# run id every 5 s and restores its memberships at once.
RESUME_BOUND = 15.0


def publish(server, key, n):
    return httpx.post(
        f"{server.url}/api/changes",
        headers={"apikey": key},
        json={"table": "orders", "type": "INSERT", "record": {"id": n}},
        timeout=10,
    )


def heartbeat_answered(ws):
    ref = ws.push("phoenix", "heartbeat", {})
    return ws.reply_to(ref)["payload"]["status"] == "ok"


@pytest.fixture
def own_redis():
    redis = Redis()
    yield redis
    redis.stop()


@pytest.mark.django_db(transaction=True)
def test_delivery_resumes_after_redis_restarts_and_nothing_committed_is_lost(
    tenant, start_server, own_redis
):
    server = start_server(REDIS_URL=own_redis.url)
    ws = Socket(server.ws_url, tenant.secret_key)
    ws.join("shop", bindings=ORDERS)
    assert publish(server, tenant.secret_key, 1).status_code == 201
    assert ws.changes(1)[0]["payload"]["data"]["record"] == {"id": 1}

    own_redis.stop()
    during = publish(server, tenant.secret_key, 2)
    assert during.status_code == 201, during.text  # committed; live delivery waits
    assert heartbeat_answered(ws), "the socket must stay up through the outage"
    own_redis.start()

    n, deadline, resumed = 3, time.monotonic() + RESUME_BOUND, False
    while time.monotonic() < deadline and not resumed:
        assert publish(server, tenant.secret_key, n).status_code == 201
        try:
            ws.recv_until(
                lambda f, n=n: (
                    f["event"] == "postgres_changes"
                    and f["payload"]["data"]["record"] == {"id": n}
                ),
                timeout=1,
            )
            resumed = True
        except TimeoutError:
            n += 1
    assert resumed, f"delivery did not resume within {RESUME_BOUND}s"
    # What was committed while Redis was down is in the change log, for catch-up.
    ids = {u.record["id"] for u in LiveUpdate.objects.filter(tenant=tenant.tenant)}
    assert set(range(1, n + 1)) <= ids
    ws.close()


@pytest.fixture
def own_postgres(tmp_path):
    postgres = Postgres()
    with psycopg.connect(postgres.admin_url, autocommit=True) as connection:
        connection.execute("CREATE DATABASE herald")
    yield postgres
    postgres.stop()


def test_publishing_answers_503_while_postgres_is_down_and_sockets_stay_up(
    own_postgres, start_server
):
    env_overrides = {"DATABASE_URL": own_postgres.url}
    server = start_server(**env_overrides)
    env = {**server.env}
    manage(env, "migrate", "--noinput")
    creds = json.loads(manage(env, "create_tenant", "Outage", "--json"))
    key = creds["secret_key"]
    listener, talker = Socket(server.ws_url, key), Socket(server.ws_url, key)
    listener.join("shop", bindings=ORDERS, broadcast={"self": False})
    talker.join("shop")

    own_postgres.halt()
    refused = publish(server, key, 1)
    assert refused.status_code == 503
    assert refused.json()["error"] == "database_unavailable"
    assert refused.headers["Retry-After"] == "5"
    assert heartbeat_answered(listener)
    talker.push(
        "realtime:shop",
        "broadcast",
        {"type": "broadcast", "event": "still-here", "payload": {}},
        join_ref=talker.join_ref,
    )
    assert (
        listener.recv_until(lambda f: f["event"] == "broadcast")["payload"]["event"]
        == "still-here"
    )
    join = listener.join("another", bindings=ORDERS)
    assert join["payload"]["response"] == {
        "reason": "UnableToConnectToProject: "
        "Realtime was unable to connect to the project database"
    }

    own_postgres.start()
    accepted = publish(server, key, 2)
    assert accepted.status_code == 201, accepted.text
    assert listener.changes(1)[0]["payload"]["data"]["record"] == {"id": 2}
    with psycopg.connect(own_postgres.url) as connection:
        rows = connection.execute(
            "SELECT record FROM realtime_liveupdate ORDER BY id"
        ).fetchall()
    assert [r[0] for r in rows] == [{"id": 2}], "the refused publish wrote nothing"
    listener.close()
    talker.close()
