"""How long a captured write takes to reach a socket.

Not part of the suite (not test_*): run it on its own and read the printout,
`python -m pytest tests/realtime/bench_capture.py -q -s`. What capture costs
the writer is `make bench-capture-cost` (benchmarks/capture_cost.py).
"""

from __future__ import annotations

import random
import statistics
import time

import httpx
import psycopg
import pytest

from tests.conftest import current_database_url

pytestmark = pytest.mark.django_db(transaction=True)

INSERT = (
    "INSERT INTO tracked_article (tenant_id, site_id, title, published, price, "
    "tags, updated_at) "
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
            # Out of step with the relay's poll, so the wait is sampled fairly.
            time.sleep(random.uniform(0.05, 0.35))
    answered = []
    for n in range(40):
        start = time.perf_counter()
        httpx.post(
            f"{herald_server.url}/api/changes",
            headers={"apikey": tenant.secret_key},
            json={"table": "orders", "type": "INSERT", "record": {"id": n}},
        )
        answered.append(time.perf_counter() - start)
        ws.changes(1)
        hinted.append(time.perf_counter() - start)
        time.sleep(0.05)
    print(f"\nREST publish answered: {percentiles(answered)}")
    print(f"\nexternal write (poll) to frame: {percentiles(external)}")
    print(f"REST publish (hint) to frame: {percentiles(hinted)}")
