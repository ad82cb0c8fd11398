"""What capture costs a writer, and how long a write takes to reach a socket.

Not part of the suite (not test_*): run it on its own and read the printout,
`python -m pytest tests/realtime/bench_capture.py -q -s`.
"""

from __future__ import annotations

import statistics
import time

import httpx
import psycopg
import pytest

from realtime.capture.services import triggers_uninstall
from realtime.tracking import tracked_models_install
from tests.conftest import current_database_url

pytestmark = pytest.mark.django_db(transaction=True)

INSERT = (
    "INSERT INTO tracked_article (tenant_id, site_id, title, published, price, "
    "tags, updated_at) "
)


def timed(db, sql, params=()):
    start = time.perf_counter()
    db.execute(sql, params)
    return time.perf_counter() - start


def writer_costs(tenant_id: int) -> dict[str, float]:
    with psycopg.connect(current_database_url(), autocommit=True) as db:
        bulk = timed(
            db,
            INSERT + "SELECT %s, 1, 't' || n, false, n, '[]', now() "
            "FROM generate_series(1, 20000) n",
            [tenant_id],
        )
        start = time.perf_counter()
        for n in range(1000):
            db.execute(
                INSERT + "VALUES (%s, 1, 'one', false, %s, '[]', now())", [tenant_id, n]
            )
        single = time.perf_counter() - start
        db.execute("DELETE FROM tracked_article")
    return {"bulk 20k rows (s)": bulk, "1000 autocommit inserts (s)": single}


def test_writer_cost_with_and_without_triggers(tenant):
    with_triggers = writer_costs(tenant.tenant.pk)
    triggers_uninstall("tracked_article")
    try:
        without = writer_costs(tenant.tenant.pk)
    finally:
        tracked_models_install()
    for name in with_triggers:
        print(
            f"\n{name}: with triggers {with_triggers[name]:.3f}, "
            f"without {without[name]:.3f}"
        )


def percentiles(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    return (
        f"p50 {statistics.median(ms):.0f} ms, p90 {ms[int(len(ms) * 0.9)]:.0f} ms, "
        f"max {ms[-1]:.0f} ms (n={len(ms)})"
    )


def test_write_to_socket_latency(tenant, sockets, herald_server):
    ws = sockets(tenant.secret_key)
    ws.join("site", bindings=[{"event": "*", "schema": "public", "table": "articles"}])
    ws.join("o", bindings=[{"event": "*", "schema": "public", "table": "orders"}])
    external, hinted = [], []
    with psycopg.connect(current_database_url(), autocommit=True) as db:
        for n in range(40):
            start = time.perf_counter()
            db.execute(
                INSERT + "VALUES (%s, 1, 'x', false, %s, '[]', now())",
                [tenant.tenant.pk, n],
            )
            ws.changes(1)
            external.append(time.perf_counter() - start)
            time.sleep(0.05)
    for n in range(40):
        start = time.perf_counter()
        httpx.post(
            f"{herald_server.url}/api/changes",
            headers={"apikey": tenant.secret_key},
            json={"table": "orders", "type": "INSERT", "record": {"id": n}},
        )
        ws.changes(1)
        hinted.append(time.perf_counter() - start)
        time.sleep(0.05)
    print(f"\nexternal write (poll) to frame: {percentiles(external)}")
    print(f"REST publish (hint) to frame: {percentiles(hinted)}")
