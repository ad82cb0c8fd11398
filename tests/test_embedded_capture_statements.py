"""Capture on the embedded default (SQLite), one statement at a time.

The same cases as tests/realtime/test_capture_statements.py on PostgreSQL:
many tenants in one statement, primary keys that move, a table without one,
excluded columns, columns added later, written by a plain sqlite3 process.
"""

from __future__ import annotations

import json
import sqlite3

import pytest

from tests.server import embedded_env, manage

pytestmark = pytest.mark.embedded


@pytest.fixture
def embedded(tmp_path):
    """A migrated embedded database with two tenants (no server needed)."""
    env = embedded_env(tmp_path)
    manage(env, "migrate", "--noinput")
    slugs = [
        json.loads(manage(env, "create_tenant", name, "--json"))["tenant"]
        for name in ("North", "South")
    ]
    db = sqlite3.connect(env["HERALD_SQLITE_PATH"], isolation_level=None)
    yield env, db, slugs
    db.close()


def tenant_ids(db) -> dict[str, int]:
    return dict(db.execute("SELECT slug, id FROM realtime_tenant"))


def changes(db) -> list[tuple]:
    rows = db.execute(
        "SELECT tenant_id, type, json(record), json(old_record), json(columns) "
        "FROM realtime_liveupdate ORDER BY id"
    ).fetchall()
    return [
        (tenant, kind, *(json.loads(v) if v else None for v in rest))
        for tenant, kind, *rest in rows
    ]


def skipped(db, table: str) -> int:
    [(count,)] = db.execute(
        "SELECT skipped FROM realtime_trackedtable WHERE db_table = ?", [table]
    ).fetchall()
    return count


def test_one_statement_for_many_tenants_records_each_row_under_its_own(embedded):
    env, db, (north, south) = embedded
    db.execute(
        "CREATE TABLE jobs (id INTEGER PRIMARY KEY, site TEXT, state TEXT, secret TEXT)"
    )
    manage(env, "track_table", "jobs", "--tenant-column", "site", "--exclude", "secret")
    ids = tenant_ids(db)
    db.execute(
        "INSERT INTO jobs (id, site, state, secret) VALUES (1, ?, 'a', 'x'), "
        "(2, ?, 'b', 'x'), (3, 'nobody', 'c', 'x'), (4, ?, 'd', 'x')",
        [south, north, south],
    )
    got = changes(db)
    assert [(t, kind, rec["id"]) for t, kind, rec, _old, _cols in got] == [
        (ids[south], "INSERT", 1),
        (ids[north], "INSERT", 2),
        (ids[south], "INSERT", 4),
    ]
    assert got[0][2] == {"id": 1, "site": south, "state": "a"}
    assert [c["name"] for c in got[0][4]] == ["id", "site", "state"]
    assert skipped(db, "jobs") == 1

    db.execute("UPDATE jobs SET state = upper(state)")
    updates = [c for c in changes(db) if c[1] == "UPDATE"]
    assert sorted(
        (new["id"], old["state"], new["state"]) for _t, _k, new, old, _c in updates
    ) == [(1, "a", "A"), (2, "b", "B"), (4, "d", "D")]
    assert all(
        "secret" not in new and "secret" not in old for _t, _k, new, old, _c in updates
    )
    db.execute("DELETE FROM jobs")
    deletes = [c for c in changes(db) if c[1] == "DELETE"]
    assert sorted(old["id"] for _t, _k, _new, old, _c in deletes) == [1, 2, 4]
    assert skipped(db, "jobs") == 3


def test_an_update_that_moves_primary_keys_pairs_each_row_with_its_own(embedded):
    env, db, (north, _south) = embedded
    db.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, state TEXT)")
    manage(env, "track_table", "jobs", "--tenant", north)
    db.execute("INSERT INTO jobs VALUES (1, 'first'), (2, 'second')")
    db.execute("UPDATE jobs SET id = id + 10")
    pairs = sorted(
        (old["id"], old["state"], new["id"], new["state"])
        for _t, kind, new, old, _c in changes(db)
        if kind == "UPDATE"
    )
    assert pairs == [(1, "first", 11, "first"), (2, "second", 12, "second")]


def test_a_table_without_a_primary_key_records_every_write(embedded):
    env, db, (north, _south) = embedded
    db.execute("CREATE TABLE notes (site TEXT, body TEXT)")
    manage(env, "track_table", "notes", "--tenant-column", "site")
    db.execute("INSERT INTO notes VALUES (?, 'a'), (?, 'a'), (?, 'b')", [north] * 3)
    db.execute("UPDATE notes SET body = body || '!' WHERE body = 'a'")
    db.execute("DELETE FROM notes WHERE body = 'b'")
    row = {"site": north}
    assert [(kind, old, new) for _t, kind, new, old, _c in changes(db)] == [
        ("INSERT", None, {**row, "body": "a"}),
        ("INSERT", None, {**row, "body": "a"}),
        ("INSERT", None, {**row, "body": "b"}),
        ("UPDATE", {**row, "body": "a"}, {**row, "body": "a!"}),
        ("UPDATE", {**row, "body": "a"}, {**row, "body": "a!"}),
        ("DELETE", {**row, "body": "b"}, None),
    ]


def test_a_column_added_later_appears_once_track_table_runs_again(embedded):
    """SQLite triggers name their columns (README): writes never fail meanwhile."""
    env, db, (north, _south) = embedded
    db.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, state TEXT)")
    manage(env, "track_table", "jobs", "--tenant", north)
    db.execute("ALTER TABLE jobs ADD COLUMN priority INTEGER")
    db.execute("INSERT INTO jobs (state, priority) VALUES ('before', 1)")
    manage(env, "track_table", "jobs", "--tenant", north)
    db.execute("INSERT INTO jobs (state, priority) VALUES ('after', 2)")
    before, after = (new for _t, _k, new, _old, _c in changes(db))
    assert before == {"id": 1, "state": "before"}
    assert after == {"id": 2, "state": "after", "priority": 2}
