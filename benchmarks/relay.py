"""The relay: committed-and-delivered changes per second, and commit->socket latency.

    make bench-relay        # or: .venv/bin/python -m benchmarks.relay

Starts a throwaway Redis and a DURABLE PostgreSQL (fsync and synchronous_commit
on, as production runs), one Herald server process, and tracks a plain table
with `track_table` (capture triggers). Writer processes (not the server) insert
one row per transaction into it, through their own PostgreSQL sessions:

- throughput: 1, 8 and 32 concurrent writers for DURATION seconds, all in one
  tenant, then spread over 32 tenants. One subscriber per tenant (service key,
  bound to the table) records what it receives; the rate counts a change only
  once its subscriber has it. Every stream is verified: each change its tenant
  committed arrives exactly once, each writer's changes in its commit order,
  and the stream's order is catch-up's order (realtime.change_log.changes_after).
- latency: writers paced at RATE changes per second in total, one tenant; the
  relay's added latency is socket arrival minus the writer's commit returning.

Everything is measured twice: as the code stands (readers below
pg_snapshot_xmin, no lock), and with the per-tenant ordering lock Herald used
before (pg_advisory_xact_lock per tenant, held until commit) taken by a BEFORE
INSERT trigger on the table, to show what the lock costs. The latency is also
measured with a short poll (--fast-poll) and with HERALD_RELAY_NOTIFY (LISTEN/
NOTIFY wake-up), the settings a deployment that needs writes from other
programs delivered within 50 ms would choose between.
"""

# It starts local tools (postgres, redis-server, daphne) with fixed arguments.
# ruff: noqa: S603, S608

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psycopg
import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.processes import create_database, stack_env  # noqa: E402
from tests.server import Server, manage  # noqa: E402
from tests.services import Postgres, Redis, postgres_bin, wait_for_port  # noqa: E402

TABLE = "bench_item"
TENANTS = 32
BINDING = [{"event": "*", "schema": "public", "table": TABLE}]

SETUP = """
import json
from realtime.models import Tenant
from realtime.services.tenants import tenant_create
out = []
for i in range({count}):
    creds = tenant_create(name=f"Bench {{i}}", slug=f"bench-{{i}}")
    out.append({{"slug": creds.tenant.slug, "id": creds.tenant.pk,
                 "secret_key": creds.secret_key}})
Tenant.objects.update(max_concurrent_users=1_000_000, max_events_per_second=1_000_000,
                      max_channels_per_client=1_000_000, max_joins_per_second=1_000_000)
print(json.dumps(out))
"""


class DurablePostgres(Postgres):
    """tests.services.Postgres with production durability: fsync, synchronous commit."""

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                *(["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []),
                postgres_bin("postgres"),
                *("-D", str(self.root / "data"), "-p", str(self.port)),
                *("-h", "127.0.0.1", "-k", str(self.root / "run")),
                *("-c", "fsync=on", "-c", "synchronous_commit=on"),
                *("-c", "full_page_writes=on", "-c", "max_connections=200"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)
        self._wait_ready()


# --- Writers (separate processes, their own sessions) ----------------------------


def write(
    url: str,
    slug: str,
    writer: int,
    span: tuple[float, float],
    interval: float,
    out: Any,
) -> None:
    """Insert one row per transaction from `span[0]` until `span[1]`; report
    each commit's time. Connected before the start, as a pool would be."""
    commits: list[float] = []
    start, until = span
    with psycopg.connect(url, autocommit=True) as db:
        time.sleep(max(0.0, start - time.time()))
        n = 0
        next_at = time.time()
        while (now := time.time()) < until:
            if interval:
                if now < next_at:
                    time.sleep(next_at - now)
                next_at += interval
            db.execute(
                f"INSERT INTO {TABLE} (tenant, writer, n) VALUES (%s, %s, %s)",
                [slug, writer, n],
            )
            commits.append(time.time())
            n += 1
    out.put((writer, commits))


# --- Subscribers (sockets on the server, in this process) --------------------------


@dataclass
class Stream:
    slug: str
    got: list[tuple[int, int, int, float]] = field(default_factory=list)  # id, w, n, t


async def subscribe(ws_url: str, tenant: dict[str, Any], stream: Stream) -> Any:
    ws = await websockets.connect(
        f"{ws_url}/realtime/v1/websocket?apikey={tenant['secret_key']}&vsn=1.0.0",
        max_size=None,
    )
    join = {"config": {"postgres_changes": BINDING}}
    frame = {"topic": "realtime:bench", "event": "phx_join", "payload": join}
    await ws.send(orjson.dumps({**frame, "ref": "1", "join_ref": "1"}).decode())
    while True:
        reply = orjson.loads(await ws.recv())
        if reply["event"] == "phx_reply":
            assert reply["payload"]["status"] == "ok", reply
            break

    async def receive() -> None:
        async for raw in ws:
            message = orjson.loads(raw)
            if message["event"] != "postgres_changes":
                continue
            record = message["payload"]["data"]["record"]
            stream.got.append(
                (record["id"], record["writer"], record["n"], time.time())
            )

    return ws, asyncio.create_task(receive())


# --- One run -------------------------------------------------------------------------


@dataclass
class Result:
    rate: float
    committed: int
    missing: int = 0
    duplicates: int = 0
    writer_order: int = 0  # a writer's changes delivered out of its commit order
    catch_up_order: int = 0  # streams whose order differs from catch-up's
    latencies: list[float] = field(default_factory=list)

    def checks(self) -> str:
        bad = {
            "missing": self.missing,
            "duplicate": self.duplicates,
            "writer-order": self.writer_order,
            "catch-up-order streams": self.catch_up_order,
        }
        wrong = {k: v for k, v in bad.items() if v}
        return "ok" if not wrong else ", ".join(f"{v} {k}" for k, v in wrong.items())


def catch_up(tenant_id: int, after: int) -> list[int]:
    """The tenant's change ids after `after`, as catch-up returns them."""
    from realtime.change_log import Reader, changes_after

    reader = Reader(tenant_id=tenant_id, role="service_role", claims={})
    ids: list[int] = []
    while True:
        page = changes_after(
            reader=reader, after=after, limit=1000, tables=[TABLE], max_scan=100_000
        )
        ids += [c.record["id"] for c in page.changes]
        after = page.next_cursor
        if not page.has_more:
            return ids


def heads(tenants: list[dict[str, Any]]) -> dict[int, int]:
    from realtime.change_log import log_head

    return {t["id"]: log_head(tenant_id=t["id"]) for t in tenants}


async def run(
    server: Server,
    url: str,
    tenants: list[dict[str, Any]],
    *,
    writers: int,
    spread: bool,
    duration: float,
    rate: float = 0,
) -> Result:
    streams = {t["slug"]: Stream(t["slug"]) for t in tenants}
    sockets = [await subscribe(server.ws_url, t, streams[t["slug"]]) for t in tenants]
    loop = asyncio.get_running_loop()
    before = await loop.run_in_executor(None, heads, tenants)
    with psycopg.connect(url, autocommit=True) as db:
        floor = db.execute(f"SELECT coalesce(max(id), 0) FROM {TABLE}").fetchone()[0]
    await asyncio.sleep(0.3)
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    # Every writer connects first: the clock starts when they all may write.
    start = time.time() + 1.0 + writers * 0.05
    until = start + duration
    interval = writers / rate if rate else 0.0
    procs = [
        context.Process(
            target=write,
            args=(
                url,
                tenants[i % len(tenants) if spread else 0]["slug"],
                i,
                (start, until),
                interval,
                out,
            ),
        )
        for i in range(writers)
    ]
    for p in procs:
        p.start()
    commits: dict[int, list[float]] = {}
    for _ in procs:
        w, times = await loop.run_in_executor(None, out.get)
        commits[w] = times
    for p in procs:
        p.join()
    with psycopg.connect(url, autocommit=True) as db:
        rows = db.execute(
            f"SELECT id, tenant, writer, n FROM {TABLE} WHERE id > %s", [floor]
        ).fetchall()
    expected: dict[str, set[int]] = {}
    for row_id, slug, _, _ in rows:
        expected.setdefault(slug, set()).add(row_id)
    # Wait for delivery (at most 30 s after the last commit).
    deadline = time.time() + 30
    while time.time() < deadline and any(
        len(streams[s].got) < len(ids) for s, ids in expected.items()
    ):
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.5)  # anything delivered twice arrives now
    for ws, task in sockets:
        task.cancel()
        await ws.close()
    result = Result(rate=0.0, committed=len(rows))
    last = start
    for t in tenants:
        stream = streams[t["slug"]]
        ids = [g[0] for g in stream.got]
        want = expected.get(t["slug"], set())
        result.missing += len(want - set(ids))
        result.duplicates += len(ids) - len(set(ids))
        seen: dict[int, int] = {}
        for _, w, n, at in stream.got:
            if n < seen.get(w, -1):
                result.writer_order += 1
            seen[w] = n
            result.latencies.append(at - commits[w][n])
            last = max(last, at)
        if want:
            ordered = await loop.run_in_executor(
                None, catch_up, t["id"], before[t["id"]]
            )
            result.catch_up_order += ordered != ids
    result.rate = len(rows) / (last - start)
    return result


LOCK_SQL = [
    f"""CREATE FUNCTION {TABLE}_lock() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7211101, hashtext(NEW.tenant));
    RETURN NEW;
END $$""",
    f"CREATE TRIGGER {TABLE}_lock BEFORE INSERT ON {TABLE} "
    f"FOR EACH ROW EXECUTE FUNCTION {TABLE}_lock()",
]


def lock_add(url: str) -> None:
    """The ordering lock Herald took before: one per tenant, held until commit."""
    with psycopg.connect(url, autocommit=True) as db:
        for statement in LOCK_SQL:
            db.execute(statement)


@contextlib.contextmanager
def stack() -> Iterator[tuple[dict[str, str], str, list[dict[str, Any]]]]:
    with contextlib.ExitStack() as stop:
        redis = Redis()
        stop.callback(redis.stop)
        pg = DurablePostgres()
        stop.callback(pg.stop)
        create_database(pg)
        env = stack_env(redis, pg)
        os.environ.update(env, DJANGO_SETTINGS_MODULE="config.settings")
        manage(env, "migrate", "--noinput")
        output = manage(env, "shell", "-c", SETUP.format(count=TENANTS))
        tenants = json.loads(output.strip().splitlines()[-1])
        with psycopg.connect(pg.url, autocommit=True) as db:
            db.execute(
                f"CREATE TABLE {TABLE} (id bigserial PRIMARY KEY, tenant text NOT NULL,"
                " writer int NOT NULL, n int NOT NULL)"
            )
        manage(env, "track_table", TABLE, "--tenant-column", "tenant")
        yield env, pg.url, tenants


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def measure(
    env: dict[str, str],
    url: str,
    tenants: list[dict[str, Any]],
    args: argparse.Namespace,
    label: str,
) -> None:
    logs = Path(tempfile.mkdtemp(prefix="herald-bench-relay-"))
    server = Server(env, log=logs / "server.log")
    try:
        rates: dict[tuple[bool, int], float] = {}
        for spread in (False, True):
            for writers in args.writers:
                result = await run(
                    server,
                    url,
                    tenants if spread else tenants[:1],
                    writers=writers,
                    spread=spread,
                    duration=args.duration,
                )
                rates[spread, writers] = result.rate
                where = f"{TENANTS} tenants" if spread else "one tenant"
                print(
                    f"  {label:10} {writers:3} writers, {where:11}: "
                    f"{result.rate:8.0f} changes/s ({result.committed} committed; "
                    f"streams {result.checks()})",
                    flush=True,
                )
        low, high = min(args.writers), max(args.writers)
        for spread in (False, True):
            where = f"{TENANTS} tenants" if spread else "one tenant"
            print(
                f"  {label:10} ratio {high}/{low} writers, {where}: "
                f"{rates[spread, high] / rates[spread, low]:.2f}x",
                flush=True,
            )
        await latency(server, url, tenants, args, label, "default poll")
    finally:
        server.stop()
    fast = {**env, "HERALD_RELAY_POLL_INTERVAL": str(args.fast_poll)}
    server = Server(fast, log=logs / "server-fast-poll.log")
    try:
        poll = f"poll {args.fast_poll * 1000:.0f} ms"
        await latency(server, url, tenants, args, label, poll)
    finally:
        server.stop()
    from realtime.wake import notify_install

    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, lambda: notify_install(enabled=True))
    server = Server({**env, "HERALD_RELAY_NOTIFY": "1"}, log=logs / "notify.log")
    try:
        await latency(server, url, tenants, args, label, "NOTIFY")
    finally:
        server.stop()
        await loop.run_in_executor(None, lambda: notify_install(enabled=False))


async def latency(
    server: Server,
    url: str,
    tenants: list[dict[str, Any]],
    args: argparse.Namespace,
    label: str,
    poll: str,
) -> None:
    result = await run(
        server,
        url,
        tenants[:1],
        writers=args.latency_writers,
        spread=False,
        duration=args.duration,
        rate=args.rate,
    )
    ms = [x * 1000 for x in result.latencies]
    print(
        f"  {label:10} latency, {poll}, {result.committed / args.duration:.0f} "
        f"changes/s (asked {args.rate:.0f}) from {args.latency_writers} other "
        f"processes: commit->socket p50 {statistics.median(ms) if ms else 0:.1f} ms, "
        f"p99 {percentile(ms, 0.99):.1f} ms (streams {result.checks()})",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--latency-writers", type=int, default=8)
    parser.add_argument("--fast-poll", type=float, default=0.02)
    args = parser.parse_args()
    with stack() as (env, url, tenants):
        import django

        django.setup()
        print(
            f"Relay benchmark: durable PostgreSQL (fsync, synchronous_commit on), "
            f"poll {env.get('HERALD_RELAY_POLL_INTERVAL', 'default')}, "
            f"{args.duration:.0f} s per run",
            flush=True,
        )
        asyncio.run(measure(env, url, tenants, args, "no lock"))
        lock_add(url)
        asyncio.run(measure(env, url, tenants, args, "with lock"))


if __name__ == "__main__":
    main()
