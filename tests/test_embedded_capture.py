"""Capture on the embedded default (SQLite, in-memory layer, one server process):
writers in other processes reach the server's sockets live."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import httpx
import pytest

from tests.realtime_clients import client_factory
from tests.server import Server, embedded_env, manage
from tests.wire import Socket

pytestmark = pytest.mark.embedded


@pytest.fixture
def embedded(tmp_path):
    env = {**embedded_env(tmp_path), "HERALD_EXTRA_APPS": "tests.tracked"}
    manage(env, "migrate", "--noinput")
    server = Server(env, log=tmp_path / "server.log")
    creds = json.loads(manage(env, "create_tenant", "Site", "--json"))
    yield env, server, creds
    server.stop()


def sqlite(env, script: str) -> None:
    """Run sqlite3 statements from a plain Python process (no Django)."""
    code = (
        "import sqlite3, sys\ndb = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
    )
    subprocess.run(
        [
            sys.executable,
            "-c",
            code + textwrap.dedent(script),
            env["HERALD_SQLITE_PATH"],
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )


def is_broadcast(frame):
    return frame["event"] == "broadcast"


def test_django_writes_in_another_process_reach_a_socket(embedded):
    env, server, creds = embedded
    ws = Socket(server.ws_url, creds["secret_key"])
    ws.join("site", bindings=[{"event": "*", "schema": "public", "table": "articles"}])
    manage(
        env,
        "shell",
        "-c",
        "from decimal import Decimal\n"
        "from realtime.models import Tenant\n"
        "from tests.tracked.models import Article\n"
        f"t = Tenant.objects.get(slug={creds['tenant']!r})\n"
        "a = Article.objects.create(tenant=t, site_id=1, title='saved', "
        "price=Decimal('9.50'), tags=['x'])\n"
        "Article.objects.filter(pk=a.pk).update(title='updated')\n"
        "[b] = Article.objects.bulk_create(\n"
        "    [Article(tenant=t, site_id=1, title='bulk')]\n"
        ")\n"
        "b.title = 'bulk updated'\n"
        "Article.objects.bulk_update([b], ['title'])\n"
        "Article.objects.all().delete()\n",
    )
    got = [f["payload"]["data"] for f in ws.changes(6)]
    assert [
        (d["type"], (d.get("record") or d["old_record"])["title"]) for d in got
    ] == [
        ("INSERT", "saved"),
        ("UPDATE", "updated"),
        ("INSERT", "bulk"),
        ("UPDATE", "bulk updated"),
        ("DELETE", "updated"),
        ("DELETE", "bulk updated"),
    ]
    first = got[0]["record"]
    assert (first["price"], first["tags"], first["published"]) == ("9.50", ["x"], False)
    assert first["updated_at"].endswith("+00:00")
    assert got[1]["old_record"]["title"] == "saved"
    assert ws.quiet(lambda f: f["event"] == "postgres_changes", wait=1.0)
    caught = httpx.get(
        f"{server.url}/api/live-updates",
        params={"since": 0, "table": "articles"},
        headers={"apikey": creds["secret_key"]},
    ).json()
    assert [c["seq"] for c in caught["changes"]] == [d["seq"] for d in got]
    ws.close()


def test_a_plain_sqlite_writer_reaches_a_socket_and_broadcasts(embedded):
    env, server, creds = embedded
    slug = creds["tenant"]
    sqlite(
        env,
        "db.execute('CREATE TABLE jobs (id INTEGER PRIMARY KEY, site TEXT, "
        "state TEXT)')",
    )
    manage(env, "track_table", "jobs", "--tenant-column", "site")
    ws = Socket(server.ws_url, creds["secret_key"])
    ws.join("jobs", bindings=[{"event": "*", "schema": "public", "table": "jobs"}])
    sqlite(
        env,
        f"""
        db.execute("BEGIN")
        db.execute("INSERT INTO jobs (site, state) VALUES ('{slug}', 'lost')")
        db.execute("INSERT INTO herald_messages (tenant_slug, topic, event, payload) "
                   "VALUES ('{slug}', 'jobs', 'done', '{{}}')")
        db.execute("ROLLBACK")
        db.execute("BEGIN")
        db.execute("INSERT INTO jobs (site, state) VALUES ('{slug}', 'new')")
        db.execute("INSERT INTO herald_messages (tenant_slug, topic, event, payload) "
                   "VALUES ('{slug}', 'jobs', 'done', '{{\\"id\\": 1}}')")
        db.execute("COMMIT")
        """,
    )
    [change] = ws.changes(1)
    assert change["payload"]["data"]["record"] == {
        "id": 1,
        "site": slug,
        "state": "new",
    }
    got = ws.recv_until(is_broadcast)
    assert got["payload"] == {
        "type": "broadcast",
        "event": "done",
        "payload": {"id": 1},
    }
    assert ws.quiet(is_broadcast, wait=1.0), "the rolled-back broadcast came"
    # SQLite triggers name their columns: a new column needs track_table again.
    sqlite(env, "db.execute('ALTER TABLE jobs ADD COLUMN priority INTEGER')")
    manage(env, "track_table", "jobs", "--tenant-column", "site")
    sqlite(env, f"db.execute(\"UPDATE jobs SET priority = 3 WHERE site = '{slug}'\")")
    [update] = ws.changes(1)
    assert update["payload"]["data"]["record"]["priority"] == 3
    assert update["payload"]["data"]["old_record"]["priority"] is None
    ws.close()


def test_deleting_a_tenant_with_tracked_rows_works(embedded):
    env, _server, creds = embedded
    out = manage(
        env,
        "shell",
        "-c",
        "from realtime.models import LiveUpdate, Tenant\n"
        "from tests.tracked.models import Article\n"
        f"t = Tenant.objects.get(slug={creds['tenant']!r})\n"
        "Article.objects.create(tenant=t, site_id=1, title='a')\n"
        "t.delete()\n"
        "print('left', Article.objects.count(), LiveUpdate.objects.count())\n",
    )
    assert out.strip().splitlines()[-1] == "left 0 0"


@pytest.mark.parametrize("kind", ["supabase-js", "python"])
def test_every_django_write_path_reaches_a_real_client_once(embedded, kind):
    """The embedded default (SQLite, in-memory layer): writes from another
    process reach an official client live, and catch-up agrees."""
    env, server, creds = embedded
    with client_factory() as open_client:
        client = open_client(kind, server, apikey=creds["secret_key"])
        client.subscribe(
            "site", [{"event": "*", "schema": "public", "table": "articles"}]
        )
        manage(
            env,
            "shell",
            "-c",
            "from django.db import connection, transaction\n"
            "from realtime.models import Tenant\n"
            "from tests.tracked.models import Article\n"
            f"t = Tenant.objects.get(slug={creds['tenant']!r})\n"
            "try:\n"
            "    with transaction.atomic():\n"
            "        Article.objects.create(tenant=t, site_id=1, title='never')\n"
            "        raise RuntimeError\n"
            "except RuntimeError:\n"
            "    pass\n"
            "a = Article.objects.create(tenant=t, site_id=1, title='saved')\n"
            "Article.objects.filter(pk=a.pk).update(title='updated')\n"
            "[b] = Article.objects.bulk_create(\n"
            "    [Article(tenant=t, site_id=1, title='bulk')]\n"
            ")\n"
            "b.title = 'bulk updated'\n"
            "Article.objects.bulk_update([b], ['title'])\n"
            "with connection.cursor() as c:\n"
            "    c.execute(\n"
            "        'UPDATE tracked_article SET site_id = 2 WHERE id = %s', [a.pk]\n"
            "    )\n"
            "Article.objects.all().delete()\n",
        )
        expected = [
            ("INSERT", "saved"),
            ("UPDATE", "updated"),
            ("INSERT", "bulk"),
            ("UPDATE", "bulk updated"),
            ("UPDATE", "updated"),
            ("DELETE", "updated"),
            ("DELETE", "bulk updated"),
        ]
        client.wait_for(
            lambda e: len(client.matching(is_change)) >= len(expected), timeout=30
        )
        client.assert_no(lambda e: False, wait=1.0)  # then nothing more came:
        seen = [change_of(e) for e in client.matching(is_change)]
    assert [(kind_, (new or old)["title"]) for kind_, new, old in seen] == expected
    assert seen[1][2]["title"] == "saved"
    assert (seen[4][1]["site_id"], seen[4][2]["site_id"]) == (2, 1)
    caught = httpx.get(
        f"{server.url}/api/live-updates",
        params={"since": 0, "table": "articles"},
        headers={"apikey": creds["secret_key"]},
    ).json()["changes"]
    assert [
        (c["type"], (c.get("record") or c.get("old_record"))["title"]) for c in caught
    ] == expected


def is_change(event):
    return event["event"] == "postgres_changes"


def change_of(event):
    """(type, new, old) as the client's postgres_changes callback got them."""
    payload = event["payload"]
    if "data" in payload:  # Python: the raw payload
        data = payload["data"]
        return data["type"], data.get("record") or {}, data.get("old_record") or {}
    return payload["eventType"], payload["new"] or {}, payload["old"] or {}
