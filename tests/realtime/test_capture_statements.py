"""Capture on PostgreSQL, one statement at a time: statement-level triggers.

A statement writing many rows records one change per row, in the rows' order,
each under its own tenant, with the same `record`/`old_record` as a row
written alone; UPDATEs that move primary keys, and tables without one, too.
"""

from __future__ import annotations

import psycopg
import pytest
from django.db import connection

from realtime.capture.services import table_track, table_untrack
from realtime.models import LiveUpdate, TrackedTable
from realtime.tracking import instance_record
from tests.conftest import current_database_url
from tests.tracked.models import Article

pytestmark = pytest.mark.django_db(transaction=True)


def changes():
    return list(LiveUpdate.objects.order_by("pk"))


def run(*statements, params=None):
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement, params)


@pytest.fixture
def jobs():
    run(
        "CREATE TABLE jobs (id int PRIMARY KEY, site text, state text, "
        "secret text, cost numeric(6,2))"
    )
    yield "jobs"
    table_untrack(db_table="jobs")
    run("DROP TABLE IF EXISTS jobs")


@pytest.fixture
def two_tenants(make_tenant):
    return make_tenant("North").tenant, make_tenant("South").tenant


def test_one_statement_for_many_tenants_records_each_row_under_its_own(
    jobs, two_tenants
):
    north, south = two_tenants
    table_track(db_table="jobs", tenant_column="site", exclude=["secret"])
    run(
        "INSERT INTO jobs (id, site, state, secret, cost) VALUES "
        "(1, %s, 'a', 'x', 1.5), (2, %s, 'b', 'x', 2), (3, 'nobody', 'c', 'x', 3), "
        "(4, %s, 'd', 'x', NULL)",
        params=[south.slug, north.slug, south.slug],
    )
    inserted = changes()
    assert [(c.record["id"], c.tenant_id) for c in inserted] == [
        (1, south.pk),
        (2, north.pk),
        (4, south.pk),
    ], "one change per row with a tenant, ids in the rows' order"
    assert inserted[0].record == {
        "id": 1,
        "site": south.slug,
        "state": "a",
        "cost": "1.50",
    }
    assert inserted[2].record["cost"] is None
    assert all(c.old_record is None and c.type == "INSERT" for c in inserted)
    assert [col["name"] for col in inserted[0].columns] == [
        "id",
        "site",
        "state",
        "cost",
    ]
    assert TrackedTable.objects.get(db_table="jobs").skipped == 1

    run("UPDATE jobs SET state = upper(state), cost = cost * 2")
    updates = [c for c in changes() if c.type == "UPDATE"]
    assert sorted(
        (c.record["id"], c.old_record["state"], c.record["state"], c.record["cost"])
        for c in updates
    ) == [(1, "a", "A", "3.00"), (2, "b", "B", "4.00"), (4, "d", "D", None)]
    assert all(
        "secret" not in c.record and "secret" not in c.old_record for c in updates
    )
    assert TrackedTable.objects.get(db_table="jobs").skipped == 2

    run("DELETE FROM jobs")
    deletes = [c for c in changes() if c.type == "DELETE"]
    assert sorted((c.old_record["id"], c.tenant_id) for c in deletes) == [
        (1, south.pk),
        (2, north.pk),
        (4, south.pk),
    ]
    assert all(c.record is None for c in deletes)
    assert TrackedTable.objects.get(db_table="jobs").skipped == 3


def test_a_statement_of_two_tenants_takes_no_lock_and_records_its_transaction(
    jobs, two_tenants
):
    """Writers never wait on each other: the log is ordered by transaction id."""
    north, south = two_tenants
    table_track(db_table="jobs", tenant_column="site")
    with psycopg.connect(current_database_url()) as writer:
        xid = writer.execute("SELECT pg_current_xact_id()::text").fetchone()[0]
        writer.execute(
            "INSERT INTO jobs (id, site) VALUES (1, %s), (2, %s), (3, %s)",
            [south.slug, north.slug, south.slug],
        )
        pid = writer.info.backend_pid
        with psycopg.connect(current_database_url()) as observer:
            held = observer.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                "AND pid = %s",
                [pid],
            ).fetchone()[0]
            # Another writer of the same tenants is not held up meanwhile.
            observer.execute("INSERT INTO jobs (id, site) VALUES (9, %s)", [south.slug])
            observer.commit()
        recorded = writer.execute(
            "SELECT DISTINCT xid::text FROM realtime_liveupdate "
            "WHERE xid = pg_current_xact_id()"
        ).fetchall()
        writer.rollback()
    assert held == 0
    assert recorded == [(xid,)]
    assert [c.record["id"] for c in changes()] == [9], "rolled back: not recorded"


def test_an_update_that_swaps_primary_keys_pairs_each_row_with_its_own_old_row(
    tenant, jobs
):
    # Deferred, so that the swap may pass through a duplicate key.
    run(
        "ALTER TABLE jobs DROP CONSTRAINT jobs_pkey, "
        "ADD PRIMARY KEY (id) DEFERRABLE INITIALLY DEFERRED"
    )
    table_track(db_table="jobs", tenant_slug=tenant.tenant.slug)
    run("INSERT INTO jobs (id, state) VALUES (1, 'first'), (2, 'second')")
    run("UPDATE jobs SET id = 3 - id")
    pairs = sorted(
        (c.old_record["id"], c.old_record["state"], c.record["id"], c.record["state"])
        for c in changes()
        if c.type == "UPDATE"
    )
    assert pairs == [(1, "first", 2, "first"), (2, "second", 1, "second")]
    run("UPDATE jobs SET state = 'again'")  # the next UPDATE: by statement again
    again = [c for c in changes() if c.type == "UPDATE"][2:]
    assert sorted((c.record["id"], c.old_record["state"]) for c in again) == [
        (1, "second"),
        (2, "first"),
    ]
    assert len(changes()) == 6, "two inserts, two swaps, two updates: none twice"


def test_a_table_without_a_primary_key_records_every_write(tenant):
    run("CREATE TABLE notes (site text, body text)")
    try:
        table_track(db_table="notes", tenant_column="site")
        slug = tenant.tenant.slug
        run(
            "INSERT INTO notes VALUES (%s, 'a'), (%s, 'a'), (%s, 'b')",
            params=[slug, slug, slug],
        )
        run("UPDATE notes SET body = body || '!' WHERE body = 'a'")
        run("DELETE FROM notes WHERE body = 'b'")
        got = [(c.type, c.old_record, c.record) for c in changes()]
        row = {"site": slug}
        assert got == [
            ("INSERT", None, {**row, "body": "a"}),
            ("INSERT", None, {**row, "body": "a"}),
            ("INSERT", None, {**row, "body": "b"}),
            ("UPDATE", {**row, "body": "a"}, {**row, "body": "a!"}),
            ("UPDATE", {**row, "body": "a"}, {**row, "body": "a!"}),
            ("DELETE", {**row, "body": "b"}, None),
        ]
    finally:
        table_untrack(db_table="notes")
        run("DROP TABLE notes")


def test_columns_added_dropped_or_retyped_later_need_no_step(tenant, jobs):
    table_track(db_table="jobs", tenant_slug=tenant.tenant.slug, exclude=["secret"])
    run(
        "ALTER TABLE jobs ADD COLUMN due timestamptz, ADD COLUMN amount numeric(8,3)",
        "ALTER TABLE jobs DROP COLUMN cost",
        "SET TIME ZONE 'Europe/Paris'",
        "INSERT INTO jobs (id, state, secret, due, amount) VALUES "
        "(1, 'new', 'x', '2026-01-02 03:04:05.5+00', 2), (2, 'new', 'y', NULL, NULL)",
        "UPDATE jobs SET state = 'done'",
        "ALTER TABLE jobs ALTER COLUMN amount TYPE int",
        "UPDATE jobs SET state = 'retyped' WHERE id = 1",
        "SET TIME ZONE 'UTC'",
    )
    first, second, update_1, update_2, retyped = changes()
    assert first.record == {
        "id": 1,
        "site": None,
        "state": "new",
        "due": "2026-01-02T03:04:05.500000+00:00",
        "amount": "2.000",
    }
    assert second.record["due"] is None and second.record["amount"] is None
    assert {c["name"]: c["type"] for c in first.columns} == {
        "id": "int4",
        "site": "text",
        "state": "text",
        "due": "timestamptz",
        "amount": "numeric",
    }
    assert update_1.old_record["state"] == "new" and update_1.record["state"] == "done"
    assert retyped.record["amount"] == 2 and retyped.old_record["amount"] == 2
    assert {"name": "amount", "type": "int4"} in retyped.columns
    assert update_2.record["id"] == 2


def test_a_bulk_update_records_each_row_as_the_python_path_writes_it(tenant):
    Article.objects.bulk_create(
        [
            Article(tenant=tenant.tenant, site_id=n, title=f"t{n}", tags=[n])
            for n in range(50)
        ]
    )
    before = Article.objects.in_bulk()
    run("UPDATE tracked_article SET price = price + 1.25, published = NOT published")
    after = Article.objects.in_bulk()
    updates = [c for c in changes() if c.type == "UPDATE"]
    assert len(updates) == 50
    for change in updates:
        pk = change.record["id"]
        assert change.old_record == instance_record(before[pk])
        assert change.record == instance_record(after[pk])
        assert change.record["price"] == str(after[pk].price)


def test_an_upsert_records_its_updates_then_its_inserts(tenant, jobs):
    """As the README says: PostgreSQL fires the statement's UPDATE trigger first."""
    table_track(db_table="jobs", tenant_slug=tenant.tenant.slug)
    run("INSERT INTO jobs (id, state) VALUES (1, 'a'), (2, 'b')")
    run(
        "INSERT INTO jobs (id, state) VALUES (2, 'x'), (3, 'y') "
        "ON CONFLICT (id) DO UPDATE SET state = excluded.state"
    )
    got = [
        (c.type, c.record["id"], (c.old_record or {}).get("state")) for c in changes()
    ]
    assert got[2:] == [("UPDATE", 2, "b"), ("INSERT", 3, None)]


def test_a_key_moved_by_a_before_trigger_is_counted_as_skipped(tenant, jobs):
    """The SET list does not name the key, so rows pair by it and this one
    cannot: never recorded wrongly, and counted where operators look."""
    table_track(db_table="jobs", tenant_slug=tenant.tenant.slug)
    run(
        "CREATE FUNCTION jobs_move() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN NEW.id := NEW.id + 100; RETURN NEW; END $$",
        "CREATE TRIGGER jobs_move BEFORE UPDATE ON jobs "
        "FOR EACH ROW WHEN (NEW.state = 'move') EXECUTE FUNCTION jobs_move()",
        "INSERT INTO jobs (id, state) VALUES (1, 'a'), (2, 'b')",
        "UPDATE jobs SET state = CASE id WHEN 1 THEN 'move' ELSE 'stay' END",
    )
    try:
        updates = [c for c in changes() if c.type == "UPDATE"]
        assert [(c.old_record["id"], c.record["state"]) for c in updates] == [
            (2, "stay")
        ]
        assert TrackedTable.objects.get(db_table="jobs").skipped == 1
    finally:
        run("DROP TRIGGER jobs_move ON jobs", "DROP FUNCTION jobs_move()")


def test_a_large_update_after_a_small_one_does_not_pair_rows_in_a_nested_loop(tenant):
    """The session caches the trigger's plans from the first call: sized for
    one row, a nested loop pairing a later UPDATE's old and new rows would
    compare every row with every other (minutes for 20,000 rows)."""
    Article.objects.bulk_create(
        [Article(tenant=tenant.tenant, site_id=n, title="t") for n in range(200)]
    )
    plans: list[str] = []
    with psycopg.connect(current_database_url(), autocommit=True) as db:
        db.add_notice_handler(lambda notice: plans.append(notice.message_primary))
        db.execute("LOAD 'auto_explain'")
        for setting in (
            "log_min_duration = 0",
            "log_nested_statements = on",
            "log_level = notice",
        ):
            db.execute(f"SET auto_explain.{setting}")
        db.execute("UPDATE tracked_article SET title = 'one' WHERE site_id = 0")
        db.execute("UPDATE tracked_article SET title = 'all'")
    pairing = [p for p in plans if "INSERT INTO" in p and "JOIN old_rows" in p]
    assert len(pairing) == 2, "both UPDATEs paired their rows by statement"
    assert all("Nested Loop" not in p for p in pairing), pairing[-1]
    assert LiveUpdate.objects.filter(type="UPDATE").count() == 201


def test_a_primary_key_renamed_or_dropped_later_never_breaks_an_update(tenant, jobs):
    table_track(db_table="jobs", tenant_slug=tenant.tenant.slug)
    run(
        "INSERT INTO jobs (id, state) VALUES (1, 'a'), (2, 'b')",
        "ALTER TABLE jobs RENAME COLUMN id TO key",
        "UPDATE jobs SET state = upper(state)",
        "UPDATE jobs SET key = key + 10 WHERE key = 1",
        # The key's row trigger depends on the column: CASCADE drops it too.
        "ALTER TABLE jobs DROP COLUMN key CASCADE",
        "UPDATE jobs SET state = lower(state)",
    )
    updates = [
        (c.old_record.get("key"), c.old_record["state"], c.record["state"])
        for c in changes()
        if c.type == "UPDATE"
    ]
    assert sorted(updates[:2]) == [(1, "a", "A"), (2, "b", "B")]
    moved = changes()[4]
    assert (moved.old_record["key"], moved.record["key"]) == (1, 11)
    assert sorted(updates[3:]) == [(None, "A", "a"), (None, "B", "b")]
