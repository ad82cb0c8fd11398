"""What capture costs a writer: each write shape with and without the triggers.

    make bench-capture-cost        # or: .venv/bin/python -m benchmarks.capture_cost

Starts its own PostgreSQL with the durable defaults (fsync and
synchronous_commit on), migrates the suite's tracked model (tests.tracked,
`track(Article, tenant="tenant")`) and times each write shape with capture,
then with the triggers uninstalled, alternating, REPEAT times; prints the
medians and their ratio. Then the same on the test configuration (fsync off,
the harsher figure: nothing hides the triggers' own work) and on the embedded
default (SQLite). Each database runs in a worker process of its own, since a
Django process has one database.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.services import Postgres  # noqa: E402

ROWS = 20_000
SINGLES = 1_000
BULK_CREATE = 2_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--worker", choices=["postgres", "sqlite"])
    parser.add_argument("--no-fast", action="store_true", help="skip fsync=off")
    args = parser.parse_args()
    if args.worker:
        worker(args.repeat, args.rows)
        return
    configs = [("PostgreSQL, durable (fsync on, synchronous_commit on)", True)]
    if not args.no_fast:
        configs.append(("PostgreSQL, test configuration (fsync off)", False))
    for title, durable in configs:
        postgres = Postgres(durable=durable)
        try:
            import psycopg

            with psycopg.connect(postgres.admin_url, autocommit=True) as db:
                db.execute("CREATE DATABASE herald")
                version = db.execute("SHOW server_version").fetchone()
            env = {"DATABASE_URL": postgres.url}
            report(f"{title}, {version[0] if version else ''}", env, args)
        finally:
            postgres.stop()
    with tempfile.TemporaryDirectory() as tmp:
        env = {"HERALD_SQLITE_PATH": str(Path(tmp) / "herald.sqlite3")}
        report("SQLite, the embedded default", env, args, worker="sqlite")


def report(
    title: str, env: dict[str, str], args: argparse.Namespace, worker: str = ""
) -> None:
    """Run one database's worker and print its figures."""
    environ = {
        **{k: v for k, v in os.environ.items() if k not in {"REDIS_URL"}},
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "HERALD_EXTRA_APPS": "tests.tracked",
        **env,
    }
    if "DATABASE_URL" not in env:
        environ.pop("DATABASE_URL", None)
    out = subprocess.run(  # noqa: S603 - this script, fixed arguments
        [
            sys.executable,
            "-m",
            "benchmarks.capture_cost",
            "--worker",
            worker or "postgres",
            "--repeat",
            str(args.repeat),
            "--rows",
            str(args.rows),
        ],
        env=environ,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    print(f"\n{title} (median of {args.repeat} runs)")
    print(f"  {'write':44} {'captured':>10} {'plain':>10} {'ratio':>7}")
    for name, (captured, plain) in figures.items():
        print(
            f"  {name:44} {captured * 1000:>8.0f}ms {plain * 1000:>8.0f}ms "
            f"{captured / plain:>6.2f}x"
        )


def worker(repeat: int, rows: int) -> None:
    """In a process of its own: migrate, then time every shape both ways."""
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from realtime.capture.services import triggers_uninstall
    from realtime.services.tenants import tenant_create
    from realtime.tracking import tracked_models_install

    call_command("migrate", "--noinput", verbosity=0)
    tenant_id = tenant_create(name="Capture bench").tenant.pk
    shapes = write_shapes(tenant_id, rows)
    figures: dict[str, tuple[list[float], list[float]]] = {
        name: ([], []) for name in shapes
    }
    for _ in range(repeat):
        for captured in (True, False):
            if captured:
                tracked_models_install()
            else:
                triggers_uninstall("tracked_article")
            for name, shape in shapes.items():
                reset()
                figures[name][0 if captured else 1].append(shape())
    tracked_models_install()
    connection.close()
    print(
        json.dumps(
            {
                name: (statistics.median(with_), statistics.median(without))
                for name, (with_, without) in figures.items()
            }
        )
    )


def reset() -> None:
    """Empty the table and the change log (TRUNCATE is not captured)."""
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("TRUNCATE tracked_article, realtime_liveupdate")
            cursor.execute("VACUUM ANALYZE tracked_article")
            cursor.execute("VACUUM ANALYZE realtime_liveupdate")
        else:
            cursor.execute("DELETE FROM tracked_article")
            cursor.execute("DELETE FROM realtime_liveupdate")


INSERT = (
    "INSERT INTO tracked_article (tenant_id, site_id, title, published, price, "
    "tags, updated_at) "
)


def write_shapes(tenant_id: int, rows: int) -> dict[str, Callable[[], float]]:
    """Each write shape: it fills what it needs untimed, then times the write."""
    from django.db import connection

    from tests.tracked.models import Article

    now = "now()" if connection.vendor == "postgresql" else "datetime('now')"
    series = (
        "FROM generate_series(1, %s) n"
        if connection.vendor == "postgresql"
        else "FROM (WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 "
        "FROM s WHERE n < %s) SELECT n FROM s)"
    )
    bulk_insert = INSERT + f"SELECT %s, 1, 't' || n, false, n, '[]', {now} {series}"

    def timed(sql: str, params: list[object]) -> float:
        with connection.cursor() as cursor:
            start = time.perf_counter()
            cursor.execute(sql, params)
            return time.perf_counter() - start

    def fill() -> None:
        timed(bulk_insert, [tenant_id, rows])

    def singles() -> float:
        with connection.cursor() as cursor:
            start = time.perf_counter()
            for n in range(SINGLES):
                cursor.execute(
                    INSERT + f"VALUES (%s, 1, 'one', false, %s, '[]', {now})",
                    [tenant_id, n],
                )
            return time.perf_counter() - start

    def update() -> float:
        fill()
        return timed("UPDATE tracked_article SET title = title || '!'", [])

    def delete() -> float:
        fill()
        return timed("DELETE FROM tracked_article", [])

    def bulk_create() -> float:
        made = [
            Article(tenant_id=tenant_id, site_id=1, title=f"b{n}", tags=[])
            for n in range(BULK_CREATE)
        ]
        start = time.perf_counter()
        Article.objects.bulk_create(made)
        return time.perf_counter() - start

    return {
        f"INSERT ... SELECT of {rows:,} rows": lambda: timed(
            bulk_insert, [tenant_id, rows]
        ),
        f"{SINGLES:,} single-row autocommit INSERTs": singles,
        f"UPDATE of {rows:,} rows": update,
        f"DELETE of {rows:,} rows": delete,
        f"Django bulk_create() of {BULK_CREATE:,} objects": bulk_create,
    }


if __name__ == "__main__":
    main()
