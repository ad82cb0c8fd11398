"""Capture in the database: every write to a tracked table is one change."""

from __future__ import annotations

import shutil
import subprocess
from decimal import Decimal

import psycopg
import pytest
from django.db import connection, transaction

from audit.models import ActivityLog, EventType
from realtime.capture.services import table_track, table_untrack, triggers_uninstall
from realtime.change_log import Reader, changes_after
from realtime.models import HeraldMessage, LiveUpdate, Tenant, TrackedTable
from realtime.tracking import tracked_models_install
from tests.conftest import current_database_url
from tests.server import manage
from tests.tracked.models import Article

pytestmark = pytest.mark.django_db(transaction=True)


def article(tenant, title="Hello", **fields):
    return Article.objects.create(
        tenant=tenant.tenant, site_id=1, title=title, **fields
    )


def changes():
    return list(LiveUpdate.objects.order_by("pk"))


def test_update_queryset_records_each_row_with_its_old_row(tenant):
    a, b = article(tenant, "a"), article(tenant, "b")
    Article.objects.filter(pk__in=[a.pk, b.pk]).update(published=True)
    updates = [c for c in changes() if c.type == "UPDATE"]
    assert sorted(c.record["id"] for c in updates) == [a.pk, b.pk]
    assert all(c.record["published"] is True for c in updates)
    assert all(c.old_record["published"] is False for c in updates)
    assert len(changes()) == 4, "two inserts and two updates, nothing twice"


def test_bulk_create_and_bulk_update_record_once_per_row(tenant):
    made = Article.objects.bulk_create(
        [Article(tenant=tenant.tenant, site_id=2, title=t) for t in "xyz"]
    )
    assert [c.type for c in changes()] == ["INSERT"] * 3
    for a in made:
        a.title = a.title.upper()
    Article.objects.bulk_update(made, ["title"])
    updates = [c for c in changes() if c.type == "UPDATE"]
    assert sorted((c.old_record["title"], c.record["title"]) for c in updates) == [
        ("x", "X"),
        ("y", "Y"),
        ("z", "Z"),
    ]
    assert len(changes()) == 6


def test_queryset_delete_records_the_old_rows(tenant):
    article(tenant, "a"), article(tenant, "b")
    Article.objects.all().delete()
    deletes = [c for c in changes() if c.type == "DELETE"]
    assert sorted(c.old_record["title"] for c in deletes) == ["a", "b"]
    assert all(c.record is None for c in deletes)
    assert len(changes()) == 4


def test_save_records_once_with_the_row_as_stored(tenant):
    a = article(tenant, price=Decimal("9.50"))
    a.title = "Changed"
    a.save()
    insert, update = changes()
    assert (insert.type, update.type) == ("INSERT", "UPDATE")
    assert update.old_record["title"] == "Hello" and update.record["title"] == "Changed"
    assert update.record["price"] == "9.50"
    assert update.record["updated_at"] > update.old_record["updated_at"]


def test_raw_sql_is_recorded(tenant):
    a = article(tenant)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE tracked_article SET title = 'raw' WHERE id = %s", [a.pk])
        cursor.execute("DELETE FROM tracked_article WHERE id = %s", [a.pk])
    _insert, update, delete = changes()
    assert update.record["title"] == "raw" and update.old_record["title"] == "Hello"
    assert delete.old_record["title"] == "raw"


def test_rolled_back_writes_record_nothing(tenant):
    with pytest.raises(RuntimeError), transaction.atomic():
        article(tenant)
        Article.objects.update(title="x")
        raise RuntimeError
    assert changes() == []


def test_deleting_a_tenant_with_tracked_rows_works(make_tenant):
    doomed, other = make_tenant("Doomed"), make_tenant("Other")
    article(doomed), article(other)
    doomed.tenant.delete()
    assert not Tenant.objects.filter(slug="doomed").exists()
    assert [c.tenant_id for c in changes()] == [other.tenant.pk]


def test_a_tracked_model_is_remembered_and_triggers_survive_migrate(tenant):
    tracked = TrackedTable.objects.get(db_table="tracked_article")
    assert (tracked.table, tracked.tenant_kind, tracked.source) == (
        "articles",
        "id",
        "model",
    )


@pytest.fixture
def jobs():
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE jobs (id serial PRIMARY KEY, site text, state text, "
            "secret text, cost numeric(6,2))"
        )
    yield "jobs"
    table_untrack(db_table="jobs")
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS jobs")


def test_track_table_records_writes_of_another_program(tenant, jobs, subprocess_env):
    out = manage(
        subprocess_env,
        "track_table",
        "jobs",
        "--tenant-column",
        "site",
        "--exclude",
        "secret",
    )
    assert "Tracking jobs" in out
    psql = shutil.which("psql") or "/usr/lib/postgresql/15/bin/psql"
    slug = tenant.tenant.slug
    subprocess.run(
        [
            psql,
            current_database_url(),
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            f"INSERT INTO jobs (site, state, secret, cost) VALUES ('{slug}', 'new', "
            "'s3cret', 1.50); UPDATE jobs SET state = 'done'",
        ],
        check=True,
        capture_output=True,
    )
    insert, update = changes()
    assert insert.table == "jobs" and insert.tenant_id == tenant.tenant.pk
    assert insert.record == {"id": 1, "site": slug, "state": "new", "cost": "1.50"}
    assert update.old_record["state"] == "new" and update.record["state"] == "done"
    assert {"name": "cost", "type": "numeric"} in update.columns
    assert "secret" not in {c["name"] for c in update.columns}


def test_a_column_added_later_appears_without_a_step(tenant, jobs):
    table_track(db_table="jobs", tenant_slug=tenant.tenant.slug)
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE jobs ADD COLUMN priority int")
        cursor.execute("INSERT INTO jobs (state, priority) VALUES ('new', 3)")
    [change] = changes()
    assert change.record["priority"] == 3
    assert change.tenant_id == tenant.tenant.pk


def test_rows_of_an_unknown_tenant_are_skipped_and_counted(tenant, jobs):
    table_track(db_table="jobs", tenant_column="site")
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO jobs (site, state) VALUES ('nobody', 'new')")
        cursor.execute(
            "INSERT INTO jobs (site, state) VALUES (%s, 'new')", [tenant.tenant.slug]
        )
    assert len(changes()) == 1
    tracked = TrackedTable.objects.get(db_table="jobs")
    assert tracked.skipped == 1 and tracked.last_skipped_at is not None


def test_track_and_untrack_are_idempotent_and_logged(tenant, jobs, subprocess_env):
    for _ in range(2):
        manage(subprocess_env, "track_table", "jobs", "--tenant", tenant.tenant.slug)
    assert TrackedTable.objects.filter(db_table="jobs").count() == 1
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO jobs (state) VALUES ('once')")
    assert len(changes()) == 1, "two runs, one trigger"
    assert "No longer tracking jobs" in manage(subprocess_env, "untrack_table", "jobs")
    assert "was not tracked" in manage(subprocess_env, "untrack_table", "jobs")
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO jobs (state) VALUES ('unseen')")
    assert len(changes()) == 1
    logged = ActivityLog.objects.filter(target="jobs").values_list(
        "event_type", flat=True
    )
    assert sorted(logged) == [EventType.TABLE_TRACKED] * 2 + [EventType.TABLE_UNTRACKED]


def test_track_table_refuses_what_it_cannot_track(tenant, jobs, subprocess_env):
    for args, error in [
        (["nope", "--tenant", tenant.tenant.slug], "No table 'nope'"),
        (["jobs", "--tenant", "ghost"], "No tenant 'ghost'"),
        (["jobs", "--tenant-column", "missing"], "has no column missing"),
    ]:
        with pytest.raises(RuntimeError, match=error):
            manage(subprocess_env, "track_table", *args)


def test_a_tenants_writers_never_wait_and_readers_never_skip_a_late_commit(tenant):
    """A writer holding its transaction open does not hold up the tenant's
    other writers; catch-up returns neither change until it ends, then both,
    the one that began first first."""
    url = current_database_url()
    reader = Reader(tenant_id=tenant.tenant.pk, role="service_role", claims={})
    with psycopg.connect(url) as first:
        first.execute(
            "INSERT INTO tracked_article (tenant_id, site_id, title, published, "
            "price, tags, updated_at) VALUES (%s, 1, 'first', false, 0, '[]', now())",
            [tenant.tenant.pk],
        )
        with psycopg.connect(url, autocommit=True) as second:
            # Committed at once: it does not wait for `first` (no timeout needed).
            second.execute("SET statement_timeout = '10s'")
            second.execute(
                "INSERT INTO tracked_article (tenant_id, site_id, title, published, "
                "price, tags, updated_at) VALUES (%s, 1, 'second', false, 0, '[]', "
                "now())",
                [tenant.tenant.pk],
            )
        assert len(changes()) == 1, "the second writer's change is committed"
        page = changes_after(reader=reader, after=0, limit=10)
        assert page.changes == [], "nothing readable while an older writer is open"
        first.commit()
    page = changes_after(reader=reader, after=page.next_cursor, limit=10)
    assert [c.record["title"] for c in page.changes] == ["first", "second"]


def test_a_writer_with_only_the_readme_grants_is_captured(tenant, jobs):
    """SECURITY INVOKER: the writer's own rights, which the README lists."""
    table_track(db_table="jobs", tenant_column="site")
    slug = tenant.tenant.slug
    psql = shutil.which("psql") or "/usr/lib/postgresql/15/bin/psql"
    script = f"""
        CREATE ROLE herald_worker;
        GRANT SELECT (id, slug) ON realtime_tenant TO herald_worker;
        GRANT INSERT ON realtime_liveupdate TO herald_worker;
        GRANT USAGE ON SEQUENCE realtime_liveupdate_id_seq TO herald_worker;
        GRANT SELECT (db_table, skipped), UPDATE (skipped, last_skipped_at)
            ON realtime_trackedtable TO herald_worker;
        GRANT INSERT ON herald_messages TO herald_worker;
        GRANT USAGE ON SEQUENCE herald_messages_id_seq TO herald_worker;
        GRANT INSERT, UPDATE, SELECT ON jobs TO herald_worker;
        GRANT USAGE ON SEQUENCE jobs_id_seq TO herald_worker;
        SET ROLE herald_worker;
        INSERT INTO jobs (site, state) VALUES ('{slug}', 'new');
        INSERT INTO jobs (site, state) VALUES ('nobody', 'new');
        SELECT herald_send('{slug}', 'room', 'done', '{{"ok": true}}', false);
        RESET ROLE;
        DROP OWNED BY herald_worker;
        DROP ROLE herald_worker;
    """
    result = subprocess.run(
        [psql, current_database_url(), "-v", "ON_ERROR_STOP=1", "-c", script],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    [change] = changes()
    assert change.record["state"] == "new"
    assert TrackedTable.objects.get(db_table="jobs").skipped == 1
    [message] = HeraldMessage.objects.all()
    assert (message.topic, message.payload) == ("room", {"ok": True})


def test_timestamps_are_recorded_as_the_python_path_writes_them(tenant):
    """UTC, six digits of microseconds or none: what instance_record gives."""
    from datetime import UTC, datetime

    from realtime.tracking import instance_record

    a = article(tenant)
    for micro in (123450, 0, 7):
        stamp = datetime(2026, 1, 2, 3, 4, 5, micro, tzinfo=UTC)
        Article.objects.filter(pk=a.pk).update(updated_at=stamp)
        a.refresh_from_db()
        assert changes()[-1].record["updated_at"] == instance_record(a)["updated_at"]
    with connection.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'Europe/Paris'")
        cursor.execute("UPDATE tracked_article SET title = 'tz'")
        cursor.execute("SET TIME ZONE 'UTC'")
    assert changes()[-1].record["updated_at"] == "2026-01-02T03:04:05.000007+00:00"


def test_migrate_brings_a_command_tracked_table_back_to_current_triggers(tenant, jobs):
    """An upgrade changes the triggers' form: `migrate` regenerates them."""
    table_track(db_table="jobs", tenant_slug=tenant.tenant.slug)
    triggers_uninstall("jobs")  # as if installed by an older Herald, then lost
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO jobs (state) VALUES ('unseen')")
    assert changes() == []
    tracked_models_install()  # what `migrate` runs (post_migrate)
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO jobs (state) VALUES ('seen')")
    [change] = changes()
    assert change.record["state"] == "seen"
