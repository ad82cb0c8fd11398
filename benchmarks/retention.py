"""Retention on a million rows, with a publisher writing all along.

    make bench-retention            # or: .venv/bin/python -m benchmarks.retention

Starts a throwaway PostgreSQL, migrates, inserts ROWS expired changes for one
tenant, then runs the batched retention while a publisher thread records one
change every few milliseconds. Prints the delete rate and the publisher's
latency before and during the delete: a delete that locked writers out would
show as a latency of seconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.server import manage  # noqa: E402
from tests.services import Postgres  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=5000)
    args = parser.parse_args()

    postgres = Postgres()
    try:
        import psycopg

        with psycopg.connect(postgres.admin_url, autocommit=True) as connection:
            connection.execute("CREATE DATABASE herald")
        env = {**os.environ, "DATABASE_URL": postgres.url}
        env.pop("REDIS_URL", None)
        manage(env, "migrate", "--noinput")
        os.environ.update(
            DATABASE_URL=postgres.url, DJANGO_SETTINGS_MODULE="config.settings"
        )
        os.environ.pop("REDIS_URL", None)
        run(args.rows, args.batch)
    finally:
        postgres.stop()


def run(rows: int, batch: int) -> None:
    import django

    django.setup()
    from django.db import connection

    from realtime.models import LiveUpdate
    from realtime.services.changes import ChangeInput, live_updates_record
    from realtime.services.retention import live_updates_expire
    from realtime.services.tenants import tenant_create

    tenant = tenant_create(name="Retention bench").tenant
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO realtime_liveupdate
                (tenant_id, "table", type, record, columns, commit_timestamp)
            SELECT %s, 'bench', 'INSERT', jsonb_build_object('n', g),
                   '[{"name": "n", "type": "int8"}]'::jsonb,
                   now() - interval '30 days'
            FROM generate_series(1, %s) AS g
            """,
            [tenant.pk, rows],
        )
    print(f"inserted {rows:,} expired rows in {time.perf_counter() - started:.1f} s")

    latencies: list[float] = []
    stop = threading.Event()

    def publisher() -> None:
        from django.db import connection as own

        change = [ChangeInput(table="live", type="INSERT", record={"at": 0})]
        while not stop.is_set():
            began = time.perf_counter()
            live_updates_record(tenant=tenant, changes=change)
            latencies.append(time.perf_counter() - began)
            time.sleep(0.005)
        own.close()

    writer = threading.Thread(target=publisher)
    writer.start()
    time.sleep(3)
    baseline = list(latencies)
    latencies.clear()
    began = time.perf_counter()
    deleted = live_updates_expire(tenant=tenant, batch=batch)
    took = time.perf_counter() - began
    during = list(latencies)
    stop.set()
    writer.join()

    def ms(values: list[float], q: float) -> str:
        return f"{percentile(values, q) * 1000:.1f}"

    print(
        f"deleted {deleted:,} rows in {took:.1f} s ({deleted / took:,.0f} rows/s), "
        f"batches of {batch}"
    )
    print(
        f"left: {LiveUpdate.objects.filter(tenant=tenant).count():,} rows "
        f"(the publisher's own, all inside retention)"
    )
    print("publisher latency (ms)      p50     p99     max   publishes")
    for label, values in (
        ("before the delete", baseline),
        ("during the delete", during),
    ):
        print(
            f"  {label:24} {ms(values, 0.5):>6}  {ms(values, 0.99):>6}  "
            f"{max(values, default=0) * 1000:>6.1f}   {len(values):>6}"
        )
    print(
        f"  median ratio during/before: "
        f"{statistics.median(during) / statistics.median(baseline):.2f}"
    )


if __name__ == "__main__":
    main()
