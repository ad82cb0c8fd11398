"""What broadcast replay and change feeds cost.

    make bench-replay            # or: .venv/bin/python -m benchmarks.replay

Starts a throwaway PostgreSQL and one Herald process (embedded layer, no
Redis), then, in one run:

1. REST broadcasts, one at a time: public (not stored) against private
   (stored for replay first): messages per second and the ratio.
2. Joins of a private channel: plain against `replay {since: 0}` with 25
   stored messages to replay: median time to the last replayed frame.
3. A change feed's backlog: a join from cursor 0 with CHANGES changes behind
   it: time until the last one arrives, in changes per second.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.server import Server, manage  # noqa: E402
from tests.services import Postgres  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--broadcasts", type=int, default=300)
    parser.add_argument("--joins", type=int, default=30)
    parser.add_argument("--changes", type=int, default=5000)
    args = parser.parse_args()

    postgres = Postgres()
    server = None
    try:
        import psycopg

        with psycopg.connect(postgres.admin_url, autocommit=True) as connection:
            connection.execute("CREATE DATABASE herald")
        env = {**os.environ, "DATABASE_URL": postgres.url}
        env.pop("REDIS_URL", None)
        manage(env, "migrate", "--noinput")
        keys = json.loads(manage(env, "create_tenant", "Bench", "--json"))
        os.environ.update(
            DATABASE_URL=postgres.url, DJANGO_SETTINGS_MODULE="config.settings"
        )
        os.environ.pop("REDIS_URL", None)
        log = Path(tempfile.mkdtemp()) / "server.log"
        server = Server(env, log=log)
        run(server, keys["secret_key"], keys["tenant"], args)
    finally:
        if server is not None:
            server.stop()
        postgres.stop()


def rest_rate(server: Server, key: str, count: int, *, private: bool) -> float:
    import httpx

    with httpx.Client(headers={"apikey": key}, timeout=10) as http:
        start = time.perf_counter()
        for n in range(count):
            message = {"topic": "bench", "event": "e", "payload": {"n": n}}
            response = http.post(
                f"{server.url}/realtime/v1/api/broadcast",
                json={"messages": [{**message, "private": private}]},
            )
            assert response.status_code == 202, response.text
        return count / (time.perf_counter() - start)


def join_time(server: Server, key: str, *, replay: bool) -> float:
    from tests.wire import Socket

    ws = Socket(server.ws_url, key)
    try:
        extra: dict[str, Any] = (
            {"broadcast": {"replay": {"since": 0}}} if replay else {}
        )
        start = time.perf_counter()
        reply = ws.join("bench", private=True, **extra)
        assert reply["payload"]["status"] == "ok", reply
        if replay:
            for _ in range(25):
                ws.recv_until(lambda f: f["event"] == "broadcast")
        return time.perf_counter() - start
    finally:
        ws.close()


def feed_rate(server: Server, key: str, slug: str, count: int) -> float:
    import django

    django.setup()
    from django.db import transaction

    from realtime.models import Tenant
    from realtime.services.changes import ChangeInput, live_updates_record
    from tests.wire import Socket

    tenant = Tenant.objects.get(slug=slug)
    for start in range(0, count, 500):
        changes = [
            ChangeInput(table="todos", type="INSERT", record={"id": n, "title": "t"})
            for n in range(start, min(count, start + 500))
        ]
        with transaction.atomic():
            live_updates_record(tenant=tenant, changes=changes)
    ws = Socket(server.ws_url, key)
    try:
        began = time.perf_counter()
        reply = ws.join(
            "changes:todos", private=True, broadcast={"replay": {"since": 0}}
        )
        assert reply["payload"]["status"] == "ok", reply
        for _ in range(count):
            ws.recv_until(lambda f: f["event"] == "broadcast", timeout=60)
        return count / (time.perf_counter() - began)
    finally:
        ws.close()


def run(server: Server, key: str, slug: str, args: argparse.Namespace) -> None:
    import django

    django.setup()
    from realtime.models import Tenant

    # Before any socket: a process shares its copy of a tenant for 30 s.
    Tenant.objects.filter(slug=slug).update(change_feeds=True)
    public = rest_rate(server, key, args.broadcasts, private=False)
    private = rest_rate(server, key, args.broadcasts, private=True)
    print(f"REST broadcast, one at a time ({args.broadcasts} each):")
    print(f"  public (not stored)   {public:8.0f} msg/s")
    print(
        f"  private (stored)      {private:8.0f} msg/s   ratio {private / public:.2f}"
    )
    plain = statistics.median(
        join_time(server, key, replay=False) for _ in range(args.joins)
    )
    replayed = statistics.median(
        join_time(server, key, replay=True) for _ in range(args.joins)
    )
    print(f"Private join, median of {args.joins}:")
    print(f"  plain                 {plain * 1000:8.1f} ms")
    print(
        f"  replaying 25          {replayed * 1000:8.1f} ms"
        f"   ratio {replayed / plain:.2f}"
    )
    rate = feed_rate(server, key, slug, args.changes)
    print(f"Change feed backlog of {args.changes} from cursor 0: {rate:8.0f} changes/s")


if __name__ == "__main__":
    main()
