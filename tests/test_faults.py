"""Faults survived: Redis restarted mid-stream, PostgreSQL down.

Each test runs a server on services of its own, so an outage touches nothing
else in the suite. Loops are bounded in count and time; loopback only.
"""

import json
import threading
import time

import httpx
import psycopg
import pytest
from websockets.exceptions import ConnectionClosed

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


def catch_up(server, key, since):
    """Every change after `since`, following next_cursor while has_more."""
    seqs, cursor = [], since
    for _ in range(100):
        page = httpx.get(
            f"{server.url}/api/live-updates",
            params={"since": cursor, "table": "orders", "limit": 100},
            headers={"apikey": key},
            timeout=10,
        ).json()
        seqs += [c["seq"] for c in page["changes"]]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            return seqs
    raise AssertionError("catch-up did not end")


def drain(ws, into):
    """Every change a socket still delivers until its server is gone."""
    with pytest.raises(ConnectionClosed):
        while True:
            frame = ws.recv(timeout=10)
            if frame["event"] == "postgres_changes":
                into.append(frame["payload"]["data"]["seq"])


@pytest.mark.django_db(transaction=True)
def test_clients_of_a_killed_process_end_with_every_change_through_catch_up(
    tenant, herald_server, start_server
):
    key, total = tenant.secret_key, 120
    doomed = start_server()
    clients = [Socket(doomed.ws_url, key) for _ in range(3)]
    for ws in clients:
        ws.join("shop", bindings=ORDERS)
    published: list[int] = []

    def publisher():
        for n in range(total):
            response = publish(herald_server, key, n)
            assert response.status_code == 201
            published.append(response.json()["changes"][0]["seq"])
            time.sleep(0.01)

    thread = threading.Thread(target=publisher)
    thread.start()
    received: list[list[int]] = [[] for _ in clients]
    for ws, seen in zip(clients, received, strict=True):
        seen += [c["payload"]["data"]["seq"] for c in ws.changes(5)]
    doomed.kill()  # mid-stream: the publisher goes on through the other process
    for ws, seen in zip(clients, received, strict=True):
        drain(ws, seen)
    # Each client reconnects to a live process, then catches up from its cursor.
    survivors = [Socket(herald_server.ws_url, key) for _ in clients]
    for ws in survivors:
        ws.join("shop", bindings=ORDERS)
    thread.join(60)
    assert not thread.is_alive() and len(published) == total
    for ws, seen in zip(survivors, received, strict=True):
        recovered = catch_up(herald_server, key, since=max(seen))
        ended_with = seen + recovered
        assert sorted(set(ended_with)) == sorted(published), "a change was lost"
        assert len(set(seen)) == len(seen), "a change was delivered twice live"
        ws.close()


def restored(server, since, timeout=RESUME_BOUND):
    """Wait for the server's hub to put its memberships back; seconds it took."""
    started, deadline = time.monotonic(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.log_path.read_text()[since:].count("restored its state"):
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"the hub did not restore its state within {timeout}s")


def join_all(clients, topic):
    """Every socket asks to join at once (concurrent joins on the server)."""
    refs = []
    for n, ws in enumerate(clients):
        ref = str(next(ws.refs))
        payload = {"config": {"postgres_changes": ORDERS, "private": False}}
        ws.push(f"realtime:{topic}-{n}", "phx_join", payload, join_ref=ref, ref=ref)
        refs.append(ref)
    return [ws.reply_to(ref)["payload"] for ws, ref in zip(clients, refs, strict=True)]


@pytest.mark.django_db(transaction=True)
def test_the_first_publish_after_redis_restarts_reaches_live_sockets(
    tenant, start_server, own_redis
):
    server = start_server(REDIS_URL=own_redis.url)
    ws = Socket(server.ws_url, tenant.secret_key)
    ws.join("shop", bindings=ORDERS)
    # The publishing side now holds pooled Redis connections.
    assert publish(server, tenant.secret_key, 1).status_code == 201
    assert ws.changes(1)[0]["payload"]["data"]["record"] == {"id": 1}

    since = len(server.log_path.read_text())
    own_redis.restart()
    restored(server, since)
    assert publish(server, tenant.secret_key, 2).status_code == 201
    change = ws.changes(1, timeout=5)[0]
    assert change["payload"]["data"]["record"] == {"id": 2}
    assert ws.quiet(lambda f: f["event"] == "postgres_changes"), "delivered twice"
    assert "Traceback" not in server.log_path.read_text()[since:]
    ws.close()


@pytest.mark.django_db(transaction=True)
def test_a_publish_while_redis_restarts_is_sent_once_it_is_back(
    tenant, start_server, own_redis
):
    server = start_server(REDIS_URL=own_redis.url)
    ws = Socket(server.ws_url, tenant.secret_key)
    ws.join("shop", bindings=ORDERS)
    assert publish(server, tenant.secret_key, 1).status_code == 201
    assert ws.changes(1)[0]["payload"]["data"]["record"] == {"id": 1}

    since = len(server.log_path.read_text())
    own_redis.stop()
    back = threading.Timer(0.3, own_redis.start)  # a quick restart
    back.start()
    assert publish(server, tenant.secret_key, 2).status_code == 201
    back.join()
    change = ws.changes(1, timeout=5)[0]
    assert change["payload"]["data"]["record"] == {"id": 2}
    assert ws.quiet(lambda f: f["event"] == "postgres_changes"), "delivered twice"
    assert "Traceback" not in server.log_path.read_text()[since:]
    ws.close()


@pytest.mark.django_db(transaction=True)
def test_joins_right_after_redis_restarts_are_answered_and_keep_their_socket(
    tenant, start_server, own_redis
):
    server = start_server(REDIS_URL=own_redis.url)
    clients = [Socket(server.ws_url, tenant.secret_key) for _ in range(30)]
    # Concurrent joins leave the server's pools holding many connections.
    assert all(r["status"] == "ok" for r in join_all(clients, "before"))

    since = len(server.log_path.read_text())
    own_redis.restart()
    replies = join_all(clients, "after")
    for reply in replies:
        assert reply["status"] in {"ok", "error"}, reply
        if reply["status"] == "error":
            assert reply["response"]["reason"], reply
    assert all(heartbeat_answered(ws) for ws in clients), "a socket was lost"
    assert [r["status"] for r in replies].count("ok") == len(clients), replies
    assert "Traceback" not in server.log_path.read_text()[since:]
    for ws in clients:
        ws.close()


@pytest.mark.django_db(transaction=True)
def test_a_join_while_redis_is_down_is_refused_and_the_socket_holds_nothing(
    tenant, start_server, own_redis
):
    server = start_server(REDIS_URL=own_redis.url)
    ws = Socket(server.ws_url, tenant.secret_key)
    assert ws.join("before", bindings=ORDERS)["payload"]["status"] == "ok"

    since = len(server.log_path.read_text())
    own_redis.stop()
    refused = ws.join("during", bindings=ORDERS)["payload"]
    assert refused == {
        "status": "error",
        "response": {
            "reason": "RealtimeNodeDisconnected: "
            "Realtime could not reach its other nodes; join again shortly"
        },
    }
    assert heartbeat_answered(ws), "the socket must stay usable"
    own_redis.start()
    restored(server, since)
    # Nothing of the refused join was kept: joining it again is a fresh join.
    assert ws.join("during", bindings=ORDERS)["payload"]["status"] == "ok"
    assert publish(server, tenant.secret_key, 1).status_code == 201
    assert {c["topic"] for c in ws.changes(2)} == {"realtime:before", "realtime:during"}
    assert "Traceback" not in server.log_path.read_text()[since:]
    ws.close()
