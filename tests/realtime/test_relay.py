"""The relay: whatever wrote a change, every server process delivers it live."""

from __future__ import annotations

import httpx
import pytest
from django.db import transaction

from realtime.capture.services import table_untrack
from realtime.models import HeraldMessage
from tests.capture_writes import EVERY_WRITE_PATH, every_write_path, psql
from tests.conftest import current_database_url
from tests.tracked.models import Article

pytestmark = pytest.mark.django_db(transaction=True)

ARTICLES = [{"event": "*", "schema": "public", "table": "articles"}]


def is_change(frame):
    return frame["event"] == "postgres_changes"


def is_broadcast(frame):
    return frame["event"] == "broadcast"


def data(frames):
    return [f["payload"]["data"] for f in frames]


def test_every_write_path_reaches_a_socket_once(tenant, sockets, herald_server):
    ws = sockets(tenant.secret_key)
    ws.join("site", bindings=ARTICLES)
    every_write_path(tenant.tenant)
    got = data(ws.changes(8))
    assert [
        (d["type"], (d.get("record") or d["old_record"])["title"]) for d in got
    ] == EVERY_WRITE_PATH
    assert got[1]["old_record"]["title"] == "saved"
    assert got[4]["record"]["site_id"] == 2 and got[4]["old_record"]["site_id"] == 1
    assert got[5]["record"]["published"] is True
    seqs = [d["seq"] for d in got]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert ws.quiet(is_change, wait=1.0), "a change came twice"
    caught = httpx.get(
        f"{herald_server.url}/api/live-updates",
        params={"since": 0, "table": "articles"},
        headers={"apikey": tenant.secret_key},
    ).json()
    assert [c["seq"] for c in caught["changes"]] == seqs


def test_rolled_back_writes_reach_nobody(tenant, sockets):
    ws = sockets(tenant.secret_key)
    ws.join("site", bindings=ARTICLES)
    with pytest.raises(RuntimeError), transaction.atomic():
        Article.objects.create(tenant=tenant.tenant, site_id=1, title="never")
        raise RuntimeError
    Article.objects.create(tenant=tenant.tenant, site_id=1, title="kept")
    [change] = data(ws.changes(1))
    assert change["record"]["title"] == "kept"
    assert ws.quiet(is_change, wait=1.0)


def test_a_change_reaches_the_sockets_of_every_process(tenant, sockets, start_server):
    other = start_server()
    here, there = sockets(tenant.secret_key), sockets(tenant.secret_key, other)
    for ws in (here, there):
        ws.join("site", bindings=ARTICLES)
    psql(
        "INSERT INTO tracked_article (tenant_id, site_id, title, published, price, "
        f"tags, updated_at) VALUES ({tenant.tenant.pk}, 1, 'psql', false, 1.5, "
        "'[]', now())"
    )
    for ws in (here, there):
        [change] = data(ws.changes(1))
        assert change["record"]["title"] == "psql"
        assert change["record"]["price"] == "1.50"


@pytest.fixture
def public_topic(tenant, sockets):
    ws = sockets(tenant.publishable_key)
    ws.join("reading_progress:7")
    return ws


def test_herald_messages_broadcast_on_commit_never_on_rollback(tenant, public_topic):
    with pytest.raises(RuntimeError), transaction.atomic():
        HeraldMessage.objects.create(
            tenant_slug=tenant.tenant.slug,
            topic="reading_progress:7",
            event="progress",
            payload={"page": 1},
        )
        raise RuntimeError
    psql(
        "BEGIN",
        "INSERT INTO herald_messages (tenant_slug, topic, event, payload) VALUES "
        f"('{tenant.tenant.slug}', 'reading_progress:7', 'progress', "
        """'{"page": 2}')""",
        "COMMIT",
    )
    got = public_topic.recv_until(is_broadcast)
    assert got["payload"] == {
        "type": "broadcast",
        "event": "progress",
        "payload": {"page": 2},
    }
    assert public_topic.quiet(is_broadcast, wait=1.0)


def test_herald_send_broadcasts_from_a_trigger(tenant, public_topic):
    slug = tenant.tenant.slug
    psql(
        "CREATE TABLE progress (user_id int, page int)",
        "CREATE FUNCTION progress_broadcast() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN PERFORM herald_send('{slug}', 'reading_progress:' || NEW.user_id, "
        "'progress', to_jsonb(NEW), false); RETURN NEW; END $$",
        "CREATE TRIGGER progress_broadcast AFTER INSERT ON progress FOR EACH ROW "
        "EXECUTE FUNCTION progress_broadcast()",
    )
    try:
        psql("INSERT INTO progress VALUES (8, 1), (7, 42)")
        got = public_topic.recv_until(is_broadcast)
        assert got["payload"]["payload"] == {"user_id": 7, "page": 42}
        assert public_topic.quiet(is_broadcast, wait=1.0), "user 8's reached user 7"
    finally:
        psql("DROP TABLE progress", "DROP FUNCTION progress_broadcast()")
        table_untrack(db_table="progress")


def test_the_relay_never_skips_nor_repeats_under_concurrent_writers(make_tenant):
    """Writers of two tenants commit in any order across tenants while a reader
    polls: it reads every committed change once, in each tenant's order."""
    import random
    import threading
    import time

    import psycopg
    from django.db import connection as django_connection

    from realtime.change_log import Reader, changes_after
    from realtime.models import LiveUpdate
    from realtime.relay import LogReader

    tenants = [make_tenant("One").tenant.pk, make_tenant("Two").tenant.pk]
    url = current_database_url()
    writing = threading.Event()
    writing.set()
    seen: list[tuple[int, int]] = []

    def write(tenant_id: int, n: int) -> None:
        with psycopg.connect(url) as db:
            for i in range(n):
                db.execute(
                    "INSERT INTO tracked_article (tenant_id, site_id, title, "
                    "published, price, tags, updated_at) VALUES "
                    "(%s, 1, %s, false, 0, '[]', now())",
                    [tenant_id, f"w{i}"],
                )
                time.sleep(random.random() / 100)  # hold the transaction open
                db.commit()

    def read() -> None:
        reader = LogReader()
        reader.start()
        while True:
            still = writing.is_set()
            seen.extend((c.tenant_id, c.pk) for c in reader.read().changes)
            if not still:
                break
            time.sleep(0.005)
        django_connection.close()

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.2)
    writers = [
        threading.Thread(target=write, args=(t, 40)) for t in tenants for _ in range(3)
    ]
    for w in writers:
        w.start()
    for w in writers:
        w.join(60)
    writing.clear()
    reader.join(30)
    committed = list(LiveUpdate.objects.order_by("pk").values_list("tenant_id", "pk"))
    assert len(committed) == 240
    assert sorted(seen, key=lambda s: s[1]) == committed, "skipped or repeated"
    for t in tenants:
        mine = [pk for tenant_id, pk in seen if tenant_id == t]
        caught = changes_after(
            reader=Reader(tenant_id=t, role="service_role", claims={}),
            after=0,
            limit=1000,
        )
        assert mine == [c.pk for c in caught.changes], "not catch-up's order"


INSERT_ARTICLE = (
    "INSERT INTO tracked_article (tenant_id, site_id, title, published, price, "
    "tags, updated_at) VALUES (%s, 1, %s, false, 0, '[]', now())"
)


def catch_up(server, apikey: str, since: int) -> dict:
    response = httpx.get(
        f"{server.url}/api/live-updates",
        params={"since": since, "table": "articles", "limit": 1000},
        headers={"apikey": apikey},
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_a_late_commit_is_delivered_live_and_in_catch_up(
    tenant, sockets, herald_server
):
    """A transaction that drew its id first commits after a later one has:
    neither the socket nor a catch-up that ran in between skips it."""
    import psycopg

    ws = sockets(tenant.secret_key)
    ws.join("site", bindings=ARTICLES)
    url, tenant_id = current_database_url(), tenant.tenant.pk
    with psycopg.connect(url) as late, psycopg.connect(url, autocommit=True) as early:
        late.execute(INSERT_ARTICLE, [tenant_id, "late"])  # drawn first, still open
        early.execute(INSERT_ARTICLE, [tenant_id, "early"])  # committed at once
        # A client catching up now, and then from where it got to.
        before = catch_up(herald_server, tenant.secret_key, 0)
        late.commit()
    got = data(ws.changes(2))
    assert [d["record"]["title"] for d in got] == ["late", "early"]
    assert ws.quiet(is_change, wait=1.0), "a change came twice"
    after = catch_up(herald_server, tenant.secret_key, before["next_cursor"])
    caught = before["changes"] + after["changes"]
    assert [c["record"]["title"] for c in caught] == ["late", "early"]
    assert [c["seq"] for c in caught] == [d["seq"] for d in got]
    # The late change follows the cursor that precedes it in the log.
    again = catch_up(herald_server, tenant.secret_key, 0)
    assert [c["record"]["title"] for c in again["changes"]] == ["late", "early"]


def test_two_servers_deliver_every_change_of_concurrent_writers_in_catch_up_order(
    make_tenant, sockets, herald_server, start_server
):
    """Many writers in one tenant and across tenants, committing in any order:
    every socket of either server process gets each of its tenant's changes
    once, in the order catch-up returns them, with no gap."""
    import random
    import threading
    import time

    import psycopg

    one, two = herald_server, start_server()
    tenants = [make_tenant(f"Writers {i}") for i in range(3)]
    streams = [
        (creds, ws)
        for creds in tenants
        for ws in (sockets(creds.secret_key, one), sockets(creds.secret_key, two))
    ]
    for _, ws in streams:
        ws.join("site", bindings=ARTICLES)
    url = current_database_url()
    # Most writers on the first tenant, a few on the others.
    plan = [tenants[0]] * 8 + [tenants[1], tenants[1], tenants[2]]
    per_writer = 15

    def write(tenant_id: int, name: str) -> None:
        with psycopg.connect(url) as db:
            for i in range(per_writer):
                db.execute(INSERT_ARTICLE, [tenant_id, f"{name}-{i}"])
                time.sleep(random.random() / 200)  # hold the transaction open
                db.commit()

    writers = [
        threading.Thread(target=write, args=(creds.tenant.pk, f"w{n}"))
        for n, creds in enumerate(plan)
    ]
    for w in writers:
        w.start()
    for w in writers:
        w.join(120)
    for creds, ws in streams:
        expected = sum(per_writer for c in plan if c is creds)
        caught = catch_up(one, creds.secret_key, 0)
        assert len(caught["changes"]) == expected and not caught["has_more"]
        got = data(ws.changes(expected, timeout=30))
        assert [d["seq"] for d in got] == [c["seq"] for c in caught["changes"]]
        assert ws.quiet(is_change, wait=0.5), "a change came twice"


def test_notify_wakes_the_relays_at_a_commit_from_another_program(
    tenant, sockets, start_server
):
    """HERALD_RELAY_NOTIFY: a psql write reaches a socket at its commit, though
    the server's poll would not look for an hour."""
    from realtime.wake import notify_install

    notify_install(enabled=True)  # what `migrate` does with the setting on
    try:
        server = start_server(
            HERALD_RELAY_NOTIFY="1", HERALD_RELAY_POLL_INTERVAL="3600"
        )
        ws = sockets(tenant.secret_key, server)
        ws.join("site", bindings=ARTICLES)
        psql(
            "INSERT INTO tracked_article (tenant_id, site_id, title, published, "
            f"price, tags, updated_at) VALUES ({tenant.tenant.pk}, 1, 'notified', "
            "false, 0, '[]', now())"
        )
        [change] = data(ws.changes(1))
        assert change["record"]["title"] == "notified"
    finally:
        notify_install(enabled=False)
