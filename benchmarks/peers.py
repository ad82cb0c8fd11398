"""`make bench-peers`: Herald against its peers, same workload, same run.

The designs, each on one server process and on two (sockets split between
them in turn, every change published once):

- Herald: `manage.py serve`, as deployed; the processes share Redis.
- ceiling: benchmarks/ceiling.py, a minimal `websockets` broadcast server, the
  ceiling for Python on this machine: it joins the same channel-layer stream
  group as Herald and gets the same message per publish, then writes its
  prepared frames (byte-identical to Herald's) to each of its sockets at once;
  wsbroadcast is the same server fanning out with `websockets.broadcast`.
- Socket.IO: benchmarks/socketio_server.js, Socket.IO 4 on Node with the Redis
  adapter; changes come through @socket.io/redis-emitter (one Redis message per
  change, received once per process), carrying the same `data` as Herald's.
- naive: the naive Channels design of `make bench` (one process by default).

The workload is `make bench`'s stream workload: S subscribers of one stream
(one topic or room), closed-loop throughput counted at the receivers, then
publish-to-receive latency at one common offered rate (half Herald's measured
maximum on one process). The load generator (benchmarks/loadgen.mjs, Node +
ws) counts every design the same way, Socket.IO included (its protocol spoken
over ws; the official socket.io-client checks each Socket.IO server first).
Prints one table, the ratios Herald/Socket.IO and ceiling/Herald on one
process and on two, and the goals (PASS/MISS).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/peers.py` as well as `-m`
    sys.path.insert(0, str(ROOT))

from benchmarks.peers_report import peers_goals, peers_report  # noqa: E402
from benchmarks.processes import (  # noqa: E402
    CeilingServer,
    LoadGen,
    NaiveServer,
    Profiler,
    SocketIOServer,
    bench_stack,
    busy_cores,
    raise_fd_limit,
    redis_flush,
    versions,
)
from benchmarks.run import log_errors  # noqa: E402
from tests.server import Server, manage  # noqa: E402
from tests.services import Redis  # noqa: E402

HERE = Path(__file__).resolve().parent
TABLE = "bench"
TOPIC = "realtime:bench"  # the one topic (Socket.IO: room) every subscriber joins
DESIGNS = ("herald", "ceiling", "wsbroadcast", "socketio", "naive")
PYTHON_DESIGNS = {"herald", "ceiling", "wsbroadcast", "naive"}
DEFAULT_RUNS = (
    "herald:1,socketio:1,ceiling:1,wsbroadcast:1,naive:1,herald:2,socketio:2,ceiling:2"
)
TENANT_ID = (
    "from realtime.models import Tenant; print(Tenant.objects.get(slug={!r}).pk)"
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs",
        default=DEFAULT_RUNS,
        help="design:processes, in order (designs: " + ", ".join(DESIGNS) + ")",
    )
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=12, help="throughput phase")
    parser.add_argument("--latency-seconds", type=float, default=8)
    parser.add_argument(
        "--latency-rate",
        type=float,
        help="deliveries/s of every latency phase (default: half Herald's max "
        "on one process, measured first)",
    )
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument(
        "--batch",
        type=int,
        default=5,
        help="changes per publish (Herald writes a publish's frames to a socket "
        "at once; with --batch 1 it joins only what queued while it was busy)",
    )
    parser.add_argument("--window", type=float, default=0.5)
    parser.add_argument(
        "--posts",
        type=int,
        default=8,
        help="publishes in flight, at most (with 2, one change per publish did "
        "not keep a Herald process busy: the publish round trip set the pace)",
    )
    parser.add_argument("--vsn", default="2.0.0", choices=["1.0.0", "2.0.0"])
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy every Python server's throughput phase into DIR",
    )
    return parser.parse_args()


def parse_runs(text: str) -> list[tuple[str, int]]:
    runs = []
    for item in text.split(","):
        design, _, count = item.strip().partition(":")
        if design not in DESIGNS or not count.isdigit() or int(count) < 1:
            raise SystemExit(f"bad run {item!r}: design:processes, designs {DESIGNS}")
        runs.append((design, int(count)))
    return runs


# --- one run: a design on N processes ---------------------------------------------


@contextlib.contextmanager
def serving(
    design: str, count: int, env: dict[str, str], logs: Path, group: str
) -> Iterator[list[Server]]:
    """`count` fresh server processes of a design, all stopped on the way out."""
    servers: list[Server] = []
    try:
        for i in range(count):
            log = logs / f"{design}{count}-{i}.log"
            if design == "herald":
                servers.append(Server(env, log=log))
            elif design == "naive":
                servers.append(NaiveServer(env, log=log))
            elif design == "ceiling":
                servers.append(CeilingServer(env, log=log, group=group))
            elif design == "wsbroadcast":
                send = "broadcast"
                servers.append(CeilingServer(env, log=log, group=group, send=send))
            else:
                servers.append(SocketIOServer(env, log=log))
        yield servers
    finally:
        for server in servers:
            server.stop()


def publisher_cmd(design: str, tenant: dict[str, str], redis: Redis) -> list[str]:
    if design == "socketio":
        script = str(HERE / "socketio_publisher.js")
        return ["node", script, redis.url, TOPIC, TABLE]
    return [sys.executable, "-m", "benchmarks.publisher", tenant["tenant"], TABLE]


def check_socketio(server: Server, redis: Redis, logs: Path) -> str:
    """The official socket.io-client joins, gets one published change, checks it."""
    script = HERE / "socketio_check.mjs"
    result = subprocess.run(  # noqa: S603 - our own script, fixed arguments
        ["node", str(script), server.ws_url.replace("ws:", "http:"), redis.url],  # noqa: S607
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=30,
    )
    (logs / "socketio-check.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise RuntimeError(f"socket.io-client check failed:\n{result.stderr[-2000:]}")
    return result.stdout.strip()


def loadgen_config(
    design: str,
    args: argparse.Namespace,
    servers: list[Server],
    tenant: dict[str, str],
    redis: Redis,
    lat_rates: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "mode": "stream",
        "protocol": "socketio" if design == "socketio" else "phoenix",
        "ws": [s.ws_url for s in servers],
        "root": str(ROOT),
        "publish": "layer",
        "publisherCmd": publisher_cmd(design, tenant, redis),
        "apikey": tenant["secret_key"],
        "vsn": args.vsn,
        "table": TABLE,
        "topics": "same",
        "count": args.subscribers,
        "serverPid": [s.process.pid for s in servers],
        "redisPid": redis.process.pid,
        "clockTicks": os.sysconf("SC_CLK_TCK"),
        "connectConcurrency": 64,
        # As make bench: sockets over worker threads, one joined alone first.
        "generators": 3,
        "prime": True,
        "batch": args.batch,
        "windowSeconds": args.window,
        "maxPosts": args.posts,
        "tputSeconds": args.seconds,
        "latSeconds": args.latency_seconds,
        "warmupSeconds": args.warmup,
        "drainSeconds": 5,
        "latRates": lat_rates,
        "maxSeconds": 90 + args.seconds + 25 * len(lat_rates),
    }


def measure(
    design: str,
    count: int,
    args: argparse.Namespace,
    env: dict[str, str],
    tenant: dict[str, str],
    redis: Redis,
    group: str,
    lat_rates: list[dict[str, Any]],
    logs: Path,
) -> dict[str, Any]:
    name = f"{design}:{count}"
    redis_flush(redis)  # no membership of an earlier run gets these changes
    print(f"[{name}] starting {count} server process(es)", flush=True)
    result: dict[str, Any] = {"design": design, "processes": count}
    with serving(design, count, env, logs, group) as servers:
        if design == "socketio":
            result["client_check"] = check_socketio(servers[0], redis, logs)
        config = loadgen_config(design, args, servers, tenant, redis, lat_rates)
        gen = LoadGen(config, log=logs / f"{design}{count}-loadgen.log")
        profiles: list[Profiler] = []
        try:
            for event in gen.events():
                if event["event"] == "phase" and event["name"] == "throughput":
                    print(
                        f"[{name}] {args.subscribers} subscribers; throughput",
                        flush=True,
                    )
                    if args.profile and design in PYTHON_DESIGNS:
                        args.profile.mkdir(parents=True, exist_ok=True)
                        profiles = [
                            Profiler(
                                s.process.pid,
                                args.seconds - args.warmup,
                                args.profile / f"{design}{count}-{i}.txt",
                            )
                            for i, s in enumerate(servers)
                        ]
                elif event["event"] == "phase":
                    print(f"[{name}] latency at {event['rate']:,.0f}/s", flush=True)
                elif event["event"] == "result":
                    result["stream"] = event
                    break
        finally:
            gen.wait()
        result["profiles"] = [p.summary() for p in profiles]
    if "stream" not in result:
        tail = (logs / f"{design}{count}-loadgen.log").read_text()[-2000:]
        raise RuntimeError(f"[{name}] the load generator gave no result:\n{tail}")
    if design in PYTHON_DESIGNS:
        errors = [log_errors(logs / f"{design}{count}-{i}.log") for i in range(count)]
        result["errors"] = {
            "count": sum(e["count"] for e in errors),
            "kinds": {k: v for e in errors for k, v in e["kinds"].items()},
        }
    rate = result["stream"].get("throughput", {}).get("deliveries_per_s", 0)
    print(f"[{name}] {rate:,.0f} deliveries/s", flush=True)
    return result


def latency_rates(
    design: str, args: argparse.Namespace, results: dict[str, Any]
) -> list[dict[str, Any]]:
    """One common rate for every design: half Herald's one-process maximum."""
    if args.latency_rate:
        return [{"label": "fixed rate", "rate": args.latency_rate}]
    herald = results.get("herald:1", {}).get("stream", {}).get("throughput", {})
    if herald.get("deliveries_per_s"):
        rate = herald["deliveries_per_s"] / 2
        return [{"label": "half Herald's 1-process max", "rate": rate}]
    return [{"label": "half its own max", "rate": "half"}]


# --- main --------------------------------------------------------------------------


def main() -> int:
    args = parse_args()
    runs = parse_runs(args.runs)
    for package in ("ws", "socket.io", "@socket.io/redis-emitter", "socket.io-client"):
        if not (HERE / "node_modules" / package).is_dir():
            raise SystemExit(
                f"benchmarks/node_modules lacks {package}: make bench-peers"
            )
    raise_fd_limit()
    logs = Path(tempfile.mkdtemp(prefix="herald-peers-"))
    results: dict[str, dict[str, Any]] = {}
    with bench_stack("Bench") as (redis, env, tenant):
        tenant_id = manage(env, "shell", "-c", TENANT_ID.format(tenant["tenant"]))
        # The last line: `shell` may say first what it imported.
        group = f"herald.t{int(tenant_id.split()[-1])}.{TABLE}"  # layer.stream_group
        print(describe(args, runs, logs), flush=True)
        load = busy_cores()
        print(f"Before the run, other processes kept {load:.2f} cores busy.")
        if load > 0.2:
            print("WARNING: the machine is not idle; the figures will be low.")
        started_at = time.monotonic()
        for design, count in runs:
            rates = latency_rates(design, args, results)
            results[f"{design}:{count}"] = measure(
                design, count, args, env, tenant, redis, group, rates, logs
            )
        print(f"All runs took {time.monotonic() - started_at:.0f} s.")
    peers_report(results, args)
    peers_goals(results, args.batch)
    for name, res in results.items():
        for i, profile in enumerate(res.get("profiles") or []):
            print(f"\npy-spy, {name} server process {i}, throughput phase:")
            print("\n".join(profile))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def describe(args: argparse.Namespace, runs: list[tuple[str, int]], logs: Path) -> str:
    order = ", ".join(f"{d} on {n}" for d, n in runs)
    return (
        f"Stack: {versions()}; {os.cpu_count()} CPUs; runs in this order: {order}.\n"
        f"Workload: {args.subscribers} subscribers of one stream, split in turn "
        f"over a design's processes; vsn {args.vsn} for the Phoenix designs; "
        f"{args.batch} changes per publish in the throughput phase "
        f"({args.seconds:g} s, closed loop), then {args.latency_seconds:g} s at "
        "one common offered rate.\n"
        "Publishing: Herald, the ceiling and the naive design get each change "
        "from the channel layer (benchmarks/publisher.py, "
        "realtime.layer.changes_send); Socket.IO from @socket.io/redis-emitter "
        f"(benchmarks/socketio_publisher.js); the same Redis. Logs: {logs}"
    )


if __name__ == "__main__":
    sys.exit(main())
