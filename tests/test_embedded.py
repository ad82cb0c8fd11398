"""The embedded default, as `make run` serves it: SQLite and the in-memory layer."""

import json

import httpx
import pytest

from tests.server import Server, embedded_env, manage

pytestmark = pytest.mark.embedded


@pytest.fixture
def embedded(tmp_path):
    env = embedded_env(tmp_path)
    manage(env, "migrate", "--noinput")
    server = Server(env, log=tmp_path / "server.log")
    yield env, server
    server.stop()


def test_embedded_default_serves_publishing(embedded):
    env, server = embedded
    health = httpx.get(f"{server.url}/healthz").json()
    assert health == {"status": "ok", "database": "ok", "channel_layer": "ok"}
    creds = json.loads(manage(env, "create_tenant", "Site", "--json"))
    response = httpx.post(
        f"{server.url}/api/live-updates",
        headers={"apikey": creds["secret_key"]},
        json={
            "site_id": 1,
            "event_type": "content.created",
            "collection": "posts",
            "item_id": 3,
        },
    )
    assert response.status_code == 201, response.text
    stored = manage(
        env,
        "shell",
        "-c",
        "from realtime.models import LiveUpdate;"
        "print(list(LiveUpdate.objects.values_list('id', 'table')))",
    )
    assert (
        stored.strip().splitlines()[-1]
        == f"[({response.json()['seq']}, 'live_updates')]"
    )
    refused = httpx.post(
        f"{server.url}/api/live-updates",
        headers={"apikey": creds["publishable_key"]},
        json={},
    )
    assert refused.status_code == 403


def test_demo_tenant_prints_keys_that_work(embedded):
    env, server = embedded
    out = manage(env, "demo_tenant", "--url", server.url)
    assert "publishable_key" in out and "createClient(" in out
    again = manage(env, "demo_tenant", "--url", server.url)
    secret = next(
        line.split()[1]
        for line in again.splitlines()
        if line.strip().startswith("secret_key")
    )
    assert secret in out, "a second run must print the same kept keys"
    response = httpx.post(
        f"{server.url}/api/changes",
        headers={"apikey": secret},
        json={"table": "t", "type": "INSERT", "record": {"a": 1}},
    )
    assert response.status_code == 201


def test_embedded_default_delivers_changes_and_presence(embedded):
    from tests.wire import Socket

    env, server = embedded
    creds = json.loads(manage(env, "create_tenant", "Live", "--json"))
    watcher = Socket(server.ws_url, creds["secret_key"])
    walker = Socket(server.ws_url, creds["secret_key"], vsn="2.0.0")
    watcher.join(
        "site-1",
        bindings=[{"event": "INSERT", "schema": "public", "table": "live_updates"}],
        presence={"enabled": True},
    )
    walker.join("site-1", presence={"enabled": True, "key": "walker"})
    ref = walker.push(
        "realtime:site-1",
        "presence",
        {"type": "presence", "event": "track", "payload": {"here": True}},
        join_ref=walker.join_ref,
    )
    assert walker.reply_to(ref)["payload"]["status"] == "ok"
    diff = watcher.recv_until(lambda f: f["event"] == "presence_diff")
    assert list(diff["payload"]["joins"]) == ["walker"]
    response = httpx.post(
        f"{server.url}/api/live-updates",
        headers={"apikey": creds["secret_key"]},
        json={
            "site_id": 1,
            "event_type": "content.created",
            "collection": "p",
            "item_id": 1,
        },
    )
    [change] = watcher.changes(1)
    assert change["payload"]["data"]["seq"] == response.json()["seq"]
    watcher.close()
    walker.close()
