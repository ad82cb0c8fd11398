"""Rows naming no known tenant: the write succeeds, the operator sees it.

README, "Capturing changes": such rows are skipped, never an error for the
writer, counted in `/metrics` as `herald_capture_skipped_rows_total` and
logged as a warning when a table's count grows.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time

import httpx
import pytest
from django.db import connection

from realtime.capture import skipped
from realtime.capture.services import table_track, table_untrack
from realtime.maintenance import maintenance_run
from realtime.models import LiveUpdate
from tests.conftest import current_database_url
from tests.realtime.test_metrics import sample

pytestmark = pytest.mark.django_db(transaction=True)

TABLE = "skipped_probe_jobs"  # its own name: the session's server keeps counts


@pytest.fixture
def probe(tenant):
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {TABLE} (id serial PRIMARY KEY, site text)")
    table_track(db_table=TABLE, tenant_column="site")
    yield tenant
    table_untrack(db_table=TABLE)
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE {TABLE}")


def psql(statement: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("psql") or "/usr/lib/postgresql/15/bin/psql"
    return subprocess.run(
        [binary, current_database_url(), "-v", "ON_ERROR_STOP=1", "-c", statement],
        capture_output=True,
        text=True,
    )


def test_a_write_naming_no_tenant_succeeds_and_shows_in_metrics_and_the_log(
    probe, herald_server
):
    written = psql(
        f"INSERT INTO {TABLE} (site) VALUES ('nobody'), ('ghost'), "
        f"('{probe.tenant.slug}')"
    )
    assert written.returncode == 0, written.stderr
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {TABLE}")
        assert cursor.fetchone()[0] == 3, "every row written"
    assert LiveUpdate.objects.count() == 1, "the known tenant's row recorded"

    text = httpx.get(f"{herald_server.url}/metrics", timeout=10).text
    assert sample(text, "herald_capture_skipped_rows_total", table=TABLE) == 2
    deadline = time.monotonic() + 10
    wanted = f"Capture skipped 2 row(s) of {TABLE} naming no known tenant (2 in all)"
    while wanted not in herald_server.log_path.read_text():
        assert time.monotonic() < deadline, "the scrape logged no warning"
        time.sleep(0.1)

    assert psql(f"UPDATE {TABLE} SET site = 'gone'").returncode == 0
    text = httpx.get(f"{herald_server.url}/metrics", timeout=10).text
    assert sample(text, "herald_capture_skipped_rows_total", table=TABLE) == 5


def test_the_maintenance_worker_warns_when_a_tables_count_grows(
    probe, caplog, monkeypatch
):
    monkeypatch.setattr(skipped, "_seen", {})  # a freshly started worker
    caplog.set_level(logging.WARNING, logger="realtime.capture.skipped")
    assert maintenance_run(only={"skipped"}) == {"skipped": 0}
    assert caplog.records == [], "nothing skipped, nothing said"

    assert psql(f"INSERT INTO {TABLE} (site) VALUES ('nobody')").returncode == 0
    assert maintenance_run(only={"skipped"}) == {"skipped": 1}
    [warning] = caplog.records
    assert warning.levelno == logging.WARNING
    assert f"skipped 1 row(s) of {TABLE}" in warning.getMessage()

    caplog.clear()
    assert maintenance_run(only={"skipped"}) == {"skipped": 0}
    assert caplog.records == [], "no growth, no new warning"
    assert psql(f"INSERT INTO {TABLE} (site) VALUES ('a'), ('b')").returncode == 0
    maintenance_run(only={"skipped"})
    [warning] = caplog.records
    assert "skipped 2 row(s)" in warning.getMessage()
    assert "(3 in all)" in warning.getMessage()
