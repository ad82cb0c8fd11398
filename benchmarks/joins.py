"""`make bench-joins`: what a join costs, and a reconnect storm, as after a deploy.

Starts a throwaway Redis and PostgreSQL (with pg_stat_statements, to count
statements) and fresh Herald processes with default settings, then runs two
phases (`--phases rate,storm`):

- rate: N sockets (`--sockets`) connect to one process with the publishable
  key, then all join at once as supabase-js does: their own user token in the
  join, a binding with a per-user filter, a topic each. Prints connects and
  joins per second, the server's CPU per connect and per join, and the Redis
  commands, Redis connections, SQL statements and PostgreSQL sessions each
  took (counted by Redis and PostgreSQL themselves, so the process's
  background work in the same seconds is included).
- storm: M clients (`--storm`) reconnect at once to two processes
  (`--storm-processes`): each connects and joins as soon as its socket opens.
  Prints how long until every one had joined, how many were refused (a
  connect that failed or a join answered with an error) and how many had not
  joined when the time ran out. The clients run in worker processes
  (`--clients`) so that their own CPU does not set the pace; each one's share
  of a core is printed.

Every socket's reply is checked: a join counts only when its reply is `ok`
with the binding's id. `--profile DIR` records server 1 with py-spy during the
rate phase's joins and prints the hottest functions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import orjson
import psycopg
import redis as redis_py
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.processes import (  # noqa: E402
    Profiler,
    bench_stack,
    busy_cores,
    raise_fd_limit,
    redis_flush,
)
from tests.server import Server  # noqa: E402

# The goals for joins (one run, this machine).
GOAL_JOINS_PER_SECOND = 1000
GOAL_STORM_SECONDS = 30.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phases", default="rate,storm")
    parser.add_argument("--sockets", type=int, default=2000, help="rate phase")
    parser.add_argument("--storm", type=int, default=10_000, help="storm clients")
    parser.add_argument("--storm-processes", type=int, default=2)
    parser.add_argument("--clients", type=int, default=2, help="storm client procs")
    parser.add_argument("--timeout", type=float, default=60, help="per phase")
    parser.add_argument(
        "--profile", type=Path, help="py-spy server 1's rate-phase joins into DIR"
    )
    parser.add_argument("--profile-seconds", type=float, default=5)
    return parser.parse_args()


# --- What the clients send ------------------------------------------------------


def token(secret: str, slug: str, n: int) -> str:
    claims = {
        "role": "authenticated",
        "sub": f"user-{n}",
        "site_id": n % 100,
        "ref": slug,
        "exp": int(time.time()) + 3600,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def join_frame(n: int, access_token: str) -> str:
    binding = {
        "event": "*",
        "schema": "public",
        "table": "orders",
        "filter": f"site_id=eq.{n % 100}",
    }
    payload = {"config": {"postgres_changes": [binding]}, "access_token": access_token}
    return orjson.dumps(["1", "1", f"realtime:user-{n}", "phx_join", payload]).decode()


async def join(ws: Any, frame: str) -> bool:
    await ws.send(frame)
    while True:
        reply = orjson.loads(await ws.recv())
        if reply[3] == "phx_reply" and reply[1] == "1":
            response = reply[4]
            return bool(
                response["status"] == "ok"
                and response["response"]["postgres_changes"][0]["id"]
            )


# --- What it cost -----------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class RoundTrips:
    """Redis commands and connections, SQL statements and PostgreSQL sessions,
    as Redis and PostgreSQL count them (this counter's own work left out)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.redis = redis_py.Redis.from_url(env["REDIS_URL"])
        self.pg = psycopg.connect(env["DATABASE_URL"], autocommit=True)
        self.pg.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")

    def snapshot(self) -> Counter[str]:
        commands = self.redis.info("commandstats")
        stats = self.redis.info("stats")
        # pg_stat_statements counts each statement as it ends; sessions still
        # open (a pool's) are counted by the backends now alive.
        statements, backends, ended = self.pg.execute(
            "SELECT"
            " (SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s"
            "  JOIN pg_database d ON d.oid = s.dbid"
            "  WHERE d.datname = current_database()"
            "  AND s.query NOT LIKE '%pg_stat%'"
            "  AND s.query NOT LIKE '%FOR KEY SHARE OF x%'),"
            " (SELECT count(*) FROM pg_stat_activity"
            "  WHERE datname = current_database() AND pid <> pg_backend_pid()),"
            " (SELECT sessions FROM pg_stat_database"
            "  WHERE datname = current_database())"
        ).fetchone()
        counts: Counter[str] = Counter(
            redis_commands=sum(int(v["calls"]) for v in commands.values()),
            redis_connections=int(stats["total_connections_received"]),
            sql_statements=int(statements),
            pg_sessions=int(backends) + int(ended),
        )
        return counts

    def statements(self) -> Counter[tuple[int, str]]:
        """Calls so far per statement: (its id, its first 70 characters)."""
        rows = self.pg.execute(
            "SELECT queryid, left(min(query), 70), sum(calls)"
            " FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid"
            " WHERE d.datname = current_database() AND query NOT LIKE '%pg_stat%'"
            " AND query NOT LIKE '%FOR KEY SHARE OF x%' GROUP BY queryid"
        ).fetchall()
        return Counter({(queryid, text): int(calls) for queryid, text, calls in rows})

    def close(self) -> None:
        self.redis.close()
        self.pg.close()


def per(label: str, before: Counter[str], after: Counter[str], n: int) -> str:
    # Each snapshot costs 2 Redis commands of its own (the INFOs).
    delta = Counter(after)
    delta.subtract(before)
    delta["redis_commands"] -= 2
    n = max(1, n)
    return (
        f"  per {label}: {delta['redis_commands'] / n:.2f} Redis commands, "
        f"{delta['redis_connections'] / n:.3f} Redis connections, "
        f"{delta['sql_statements'] / n:.2f} SQL statements, "
        f"{delta['pg_sessions'] / n:.3f} PostgreSQL sessions"
    )


def start_servers(env: dict[str, str], count: int, logs: Path, name: str) -> Any:
    stack = contextlib.ExitStack()
    servers = []
    for n in range(count):
        server = Server(env, log=logs / f"{name}-server-{n + 1}.log")
        stack.callback(server.stop)
        servers.append(server)
    return stack, servers


def socket_url(server: Server, key: str) -> str:
    return f"{server.ws_url}/realtime/v1/websocket?apikey={key}&vsn=2.0.0"


# --- Phase 1: joins per second on one process -----------------------------------


async def rate(
    args: argparse.Namespace,
    server: Server,
    tenant: dict[str, Any],
    trips: RoundTrips,
) -> dict[str, float]:
    key, secret, slug = (
        tenant["publishable_key"],
        tenant["jwt_secret"],
        tenant["tenant"],
    )
    frames = [join_frame(n, token(secret, slug, n)) for n in range(args.sockets)]
    url = socket_url(server, key)

    async def opened(_: int) -> Any:
        return await connect(url, open_timeout=args.timeout, max_size=None)

    pid = server.process.pid
    counts0, cpu0 = trips.snapshot(), cpu_seconds(pid)
    statements0 = trips.statements()
    client0, start = own_cpu(), time.monotonic()
    results = await asyncio.gather(
        *map(opened, range(args.sockets)), return_exceptions=True
    )
    sockets = [r for r in results if not isinstance(r, BaseException)]
    failures = [r for r in results if isinstance(r, BaseException)]
    connect_s = time.monotonic() - start
    counts1, cpu1 = trips.snapshot(), cpu_seconds(pid)
    statements1 = trips.statements()
    profile = None
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        out = args.profile / "joins.txt"
        profile = Profiler(pid, args.profile_seconds, out)
        await asyncio.sleep(0.5)  # py-spy attaches
    client1, start = own_cpu(), time.monotonic()
    cpu1 = cpu_seconds(pid)
    tasks = [asyncio.create_task(join(ws, frames[n])) for n, ws in enumerate(sockets)]
    await asyncio.wait(tasks, timeout=args.timeout)
    join_s = time.monotonic() - start
    joined = [t.result() if t.done() and not t.exception() else False for t in tasks]
    for task in tasks:
        task.cancel()
    cpu2, client2 = cpu_seconds(pid), own_cpu()
    counts2 = trips.snapshot()
    statements2 = trips.statements()
    ok = sum(1 for r in joined if r is True)
    print(f"\nJoins per second: {args.sockets} sockets, one process")
    if failures:
        print(f"  {len(failures)} connects failed, e.g. {failures[0]!r}")
    print(
        f"  connected {len(sockets)} in {connect_s:.2f} s "
        f"({len(sockets) / connect_s:,.0f}/s), "
        f"{(cpu1 - cpu0) * 1e3 / max(1, len(sockets)):.2f} ms server CPU per "
        f"connect, client CPU {(client1 - client0) / connect_s:.0%} of a core"
    )
    print(per("connect", counts0, counts1, len(sockets)))
    print(
        f"  joined    {ok} in {join_s:.2f} s ({ok / join_s:,.0f}/s), "
        f"{(cpu2 - cpu1) * 1e3 / max(1, ok):.2f} ms server CPU per join, "
        f"refused or failed {len(joined) - ok}, "
        f"client CPU {(client2 - client1) / join_s:.0%} of a core"
    )
    print(per("join", counts1, counts2, ok))
    for label, before, after in (
        ("connects", statements0, statements1),
        ("joins", statements1, statements2),
    ):
        after.subtract(before)
        print(f"  SQL statements during the {label}, most called:")
        for (_, text), calls in after.most_common(5):
            print(f"    {calls:6d}  {text}")
    for ws in sockets:
        with contextlib.suppress(Exception):
            await ws.close()
    if profile is not None:
        print(f"\n  server during the joins (py-spy, {out}):")
        for line in await asyncio.to_thread(profile.summary, 25):
            print(f"  {line}")
    return {
        "joins_per_s": ok / join_s,
        "refused": len(joined) - ok + len(failures),
    }


# --- Phase 2: the storm -----------------------------------------------------------


def storm_client(
    urls: list[str], frames: list[str], start_at: float, timeout: float
) -> tuple[list[str], float]:
    """One client process's share: (each socket's outcome, its CPU seconds)."""
    raise_fd_limit()
    return asyncio.run(_storm_client(urls, frames, start_at, timeout))


async def _storm_client(
    urls: list[str], frames: list[str], start_at: float, timeout: float
) -> tuple[list[str], float]:
    sockets: list[Any] = []

    async def one(url: str, frame: str) -> str:
        try:
            ws = await connect(url, open_timeout=timeout, max_size=None)
        except Exception as exc:
            failed_at = time.time() - start_at
            return f"connect failed: {type(exc).__name__} at {failed_at:.0f} s"
        sockets.append(ws)
        opened = time.time() - start_at
        try:
            ok = await join(ws, frame)
        except Exception as exc:
            return f"join failed: {type(exc).__name__}"
        if not ok:
            return "join refused"
        return f"joined {time.time() - start_at:.3f} {opened:.3f}"

    await asyncio.sleep(max(0.0, start_at - time.time()))
    cpu0 = own_cpu()
    tasks = [asyncio.create_task(one(u, f)) for u, f in zip(urls, frames, strict=True)]
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    outcomes = [t.result() if t in done else "not joined in time" for t in tasks]
    cpu = own_cpu() - cpu0
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    return outcomes, cpu


def storm(
    args: argparse.Namespace, servers: list[Server], tenant: dict[str, Any]
) -> dict[str, float]:
    key, secret, slug = (
        tenant["publishable_key"],
        tenant["jwt_secret"],
        tenant["tenant"],
    )
    n = args.storm
    frames = [join_frame(i, token(secret, slug, i)) for i in range(n)]
    urls = [socket_url(servers[i % len(servers)], key) for i in range(n)]
    start_at = time.time() + 2.0  # every client process ready by then
    cpu0 = [cpu_seconds(s.process.pid) for s in servers]
    shares = [
        (urls[c :: args.clients], frames[c :: args.clients], start_at, args.timeout)
        for c in range(args.clients)
    ]
    context = multiprocessing.get_context("spawn")
    with context.Pool(args.clients) as pool:
        results = pool.starmap(storm_client, shares)
    cpu = [cpu_seconds(s.process.pid) - c for s, c in zip(servers, cpu0, strict=True)]
    outcomes = [o for share, _ in results for o in share]
    times = sorted(float(o.split()[1]) for o in outcomes if o.startswith("joined"))
    opened = sorted(float(o.split()[2]) for o in outcomes if o.startswith("joined"))
    kinds = Counter(o for o in outcomes if not o.startswith("joined"))
    refused = sum(v for k, v in kinds.items() if k != "not joined in time")
    late = kinds["not joined in time"]
    print(f"\nReconnect storm: {n} clients at once, {len(servers)} processes")
    if times:
        last = times[-1]
        median = times[len(times) // 2]
        print(
            f"  joined {len(times)} of {n}; all that joined had by {last:.2f} s "
            f"(half by {median:.2f} s), {len(times) / last:,.0f} joins/s overall"
        )
        print(
            f"  their sockets had opened by {opened[-1]:.2f} s "
            f"(half by {opened[len(opened) // 2]:.2f} s)"
        )
    print(f"  refused {refused}, not joined within {args.timeout:.0f} s: {late}")
    for kind, count in kinds.most_common():
        print(f"    {count} x {kind}")
    for i, used in enumerate(cpu):
        print(
            f"  server {i + 1}: {used:.1f} s CPU, "
            f"{used * 1e3 / max(1, len(times) / len(servers)):.2f} ms per connect+join"
        )
    client_cpu = ", ".join(f"{c:.1f} s" for _, c in results)
    print(f"  client processes' CPU: {client_cpu}")
    return {
        "seconds": times[-1] if len(times) == n else float("inf"),
        "refused": refused,
        "late": late,
    }


# --- The run ----------------------------------------------------------------------


def verdicts(results: dict[str, dict[str, float]]) -> Iterator[str]:
    if "rate" in results:
        rate_ = results["rate"]["joins_per_s"]
        verdict = "PASS" if rate_ >= GOAL_JOINS_PER_SECOND else "MISS"
        yield (
            f"  joins per second, one process: {rate_:,.0f} "
            f"(goal {GOAL_JOINS_PER_SECOND:,}) {verdict}"
        )
    if "storm" in results:
        s = results["storm"]
        ok = s["seconds"] <= GOAL_STORM_SECONDS and not s["refused"]
        took = "not all" if s["seconds"] == float("inf") else f"{s['seconds']:.1f} s"
        yield (
            f"  storm, all joined within {GOAL_STORM_SECONDS:.0f} s, none refused: "
            f"{took}, {s['refused']:.0f} refused {'PASS' if ok else 'MISS'}"
        )


def main() -> int:
    args = parse_args()
    phases = set(args.phases.split(","))
    raise_fd_limit()
    print(f"cores busy before the run: {busy_cores():.2f} of {os.cpu_count()}")
    results: dict[str, dict[str, float]] = {}
    with bench_stack("Joins", preload="pg_stat_statements") as (redis, env, tenant):
        # Herald's defaults, whatever the benchmark stack sets for the others.
        env = {k: v for k, v in env.items() if k != "HERALD_DB_CONN_MAX_AGE"}
        logs = Path(tempfile.mkdtemp(prefix="herald-bench-joins-"))
        trips = RoundTrips(env)
        if "rate" in phases:
            stack, servers = start_servers(env, 1, logs, "rate")
            with stack:
                results["rate"] = asyncio.run(rate(args, servers[0], tenant, trips))
            redis_flush(redis)
        if "storm" in phases:
            stack, servers = start_servers(env, args.storm_processes, logs, "storm")
            with stack:
                results["storm"] = storm(args, servers, tenant)
        trips.close()
    print(f"\nGoals (logs in {logs}):")
    for line in verdicts(results):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
