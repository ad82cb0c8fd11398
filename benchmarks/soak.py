"""`make soak`: many connections across Herald processes, steady publishing, memory.

Starts a throwaway Redis and PostgreSQL, N `manage.py serve` processes (default
2) and one load generator (benchmarks/loadgen.mjs, mode "soak") that opens
10,000 joined sockets spread over the processes and over a few streams (tables
soak0..soakK-1, one topic each), heartbeats them as realtime-js does, and
reopens any socket the server closes (a reconnect, counted). Once every socket
is joined it publishes `--rate` changes a second, one stream after the other,
for `--minutes` (by default with POST /api/changes spread over the processes:
the whole path, database write included; `--publish layer` sends them straight
to the channel layer). Every `--tick` seconds it prints, per server process,
RSS (from /proc) and CPU, and for the run: deliveries/s at the receivers,
frames missing, `herald_drops_total` from each process's /metrics, reconnects
and the latency of the tick's deliveries.

Deliveries are checked per socket, never as totals per change (those would net
a socket that got a change twice against one that missed it). Each socket
records the cursor of every change it receives; a change settles 10 s after its
publish, and then every socket of its stream that was joined when it was
published (and not yet closed) and lacks it counts one missing; a frame of a
change a socket was not due (another stream's, or published before its join)
counts extra; a second frame of a change, a duplicate; a cursor lower than one
the socket already had, out of order; a cursor other than the publisher's,
wrong. A socket the server closed is checked up to its close; its reconnection
is a socket of its own.

Verdict: memory must not grow once connections are steady. The first samples
after the warm-up (default a third of the run, at most 2 minutes) are the
baseline; the mean RSS of the last two samples is compared with the mean of the
first two steady ones, per process, and growth of `--threshold` percent (5) or
more fails. Any missing, extra, duplicate, out-of-order or wrong-cursor frame
fails too, as do drops. Exits 1 on a failure.

One socket per stream joins alone before the others (`--no-prime`: all at
once): Herald drops the sockets that join a stream while its first join there
is still joining the layer group.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.processes import (  # noqa: E402
    LoadGen,
    bench_stack,
    busy_cores,
    raise_fd_limit,
    rss_kb,
    versions,
)
from tests.server import Server  # noqa: E402

TABLE = "soak"  # the streams are soak0, soak1, ...


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, default=20, help="changes a second")
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--publish", default="rest", choices=["rest", "layer"])
    parser.add_argument("--tick", type=float, default=30, help="seconds per sample")
    parser.add_argument(
        "--warmup",
        type=float,
        help="seconds of publishing before memory is steady "
        "(default: a third of the run, at most 120)",
    )
    parser.add_argument(
        "--threshold", type=float, default=5.0, help="RSS growth, percent, that fails"
    )
    parser.add_argument(
        "--no-prime",
        dest="prime",
        action="store_false",
        help="open every socket at once, without one per stream first",
    )
    parser.add_argument("--json", type=Path, help="also write the samples here")
    return parser.parse_args()


# --- what each server process says ---------------------------------------------------


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape(server: Server) -> dict[str, float]:
    """Sums of a few metrics from one process's /metrics (loopback: allowed)."""
    wanted = ("herald_drops_total", "herald_connections", "herald_deliveries_total")
    sums = dict.fromkeys(wanted, 0.0)
    try:
        text = httpx.get(f"{server.url}/metrics", timeout=10).text
    except httpx.HTTPError:
        return {k: float("nan") for k in wanted}
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in sums:
            sums[name] += float(line.rsplit(" ", 1)[1])
    return sums


class Sampler:
    """RSS, CPU and metrics of every server process, once per tick."""

    def __init__(self, servers: list[Server]) -> None:
        self.servers = servers
        self.samples: list[dict[str, Any]] = []
        self._cpu = [cpu_seconds(s.process.pid) for s in servers]
        self._t = time.monotonic()
        self.start = self._t

    def sample(self, event: dict[str, Any]) -> dict[str, Any]:
        now = time.monotonic()
        cpu = [cpu_seconds(s.process.pid) for s in self.servers]
        shares = [
            (b - a) / (now - self._t) for a, b in zip(self._cpu, cpu, strict=True)
        ]
        self._cpu, self._t = cpu, now
        metrics = [scrape(s) for s in self.servers]
        sample = {
            "t": now - self.start,
            "event": event["event"],
            "rss_kb": [rss_kb(s.process.pid) for s in self.servers],
            "cpu": shares,
            "drops": sum(m["herald_drops_total"] for m in metrics),
            "server_connections": [m["herald_connections"] for m in metrics],
            "loadgen": event,
        }
        self.samples.append(sample)
        return sample


# --- printing ----------------------------------------------------------------------


def header(count: int) -> str:
    procs = "".join(f"{f'RSS MB p{i}':>11}{f'CPU p{i}':>8}" for i in range(count))
    return (
        f"{'time':>6}{'open':>7}{'deliv/s':>9}{'missing':>9}{'drops':>7}"
        f"{'reconn':>8}{'p50/p99 ms':>14}{'publish p99 ms':>16}{procs}"
    )


def line(sample: dict[str, Any]) -> str:
    gen = sample["loadgen"]
    minutes, seconds = divmod(int(sample["t"]), 60)
    p50, p99 = gen.get("p50_ms"), gen.get("p99_ms")
    lat = "-" if p50 is None else f"{p50:.1f}/{p99:.1f}"
    pub = gen.get("publish_ms", {}).get("p99")
    pub_p99 = "-" if pub is None else f"{pub:.1f}"
    procs = "".join(
        f"{rss / 1024:>11.1f}{cpu:>8.0%}"
        for rss, cpu in zip(sample["rss_kb"], sample["cpu"], strict=True)
    )
    end = (
        " (end, after the last publish and 10 s more)" if gen["event"] == "done" else ""
    )
    return (
        f"{minutes:>3}:{seconds:02d}{gen['open']:>7}{gen['deliveries_per_s']:>9,.0f}"
        f"{gen['missing']:>9}{sample['drops']:>7.0f}{gen['reconnects']:>8}"
        f"{lat:>14}{pub_p99:>16}{procs}{end}"
    )


def verdict(
    samples: list[dict[str, Any]], warmup: float, threshold: float
) -> tuple[bool, list[str]]:
    """Memory once steady (per process), then deliveries."""
    # A tick lands a moment either side of its time: one second of slack.
    steady = [s for s in samples if s["t"] >= warmup - 1]
    lines, ok = [], True
    if len(steady) < 2:
        return False, ["memory: fewer than two samples after the warm-up; run longer"]
    first, last = steady[:2], steady[-2:]
    for i in range(len(steady[0]["rss_kb"])):
        base = sum(s["rss_kb"][i] for s in first) / len(first) / 1024
        end = sum(s["rss_kb"][i] for s in last) / len(last) / 1024
        growth = (end - base) / base * 100
        slope = rss_slope(steady, i)
        passed = growth < threshold
        ok = ok and passed
        lines.append(
            f"memory, process {i}: {base:.1f} MB once steady (t={first[0]['t']:.0f}s) "
            f"-> {end:.1f} MB at the end: {growth:+.1f}% (threshold {threshold:g}%), "
            f"trend {slope:+.2f} MB/min: {'PASS' if passed else 'FAIL (it grew)'}"
        )
    gen = samples[-1]["loadgen"]
    drops = samples[-1]["drops"]
    wrong = {k: gen[k] for k in PER_SOCKET}
    delivered_ok = not any(wrong.values()) and drops == 0 and gen["invalid"] == 0
    ok = ok and delivered_ok
    counts = ", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in wrong.items())
    lines.append(
        f"deliveries: {gen['received']:,} received; per socket: {counts} "
        f"({gen['bad_sockets']} of {gen['sockets']:,} sockets wrong; "
        f"{gen['late']} arrived after their change settled); {drops:.0f} dropped "
        f"(herald_drops_total), {gen['invalid']} invalid, {gen['reconnects']} "
        f"reconnects: {'PASS' if delivered_ok else 'FAIL'}"
    )
    return ok, lines


PER_SOCKET = ("missing", "extra", "duplicates", "out_of_order", "wrong_seq")


def rss_slope(samples: list[dict[str, Any]], i: int) -> float:
    """Least-squares RSS trend of process i, MB per minute."""
    xs = [s["t"] / 60 for s in samples]
    ys = [s["rss_kb"][i] / 1024 for s in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den


# --- main --------------------------------------------------------------------------


def main() -> int:
    args = parse_args()
    soak_seconds = args.minutes * 60
    warmup = args.warmup if args.warmup is not None else min(120, soak_seconds / 3)
    raise_fd_limit()
    logs = Path(tempfile.mkdtemp(prefix="herald-soak-"))
    servers: list[Server] = []
    sampler: Sampler | None = None
    # Herald's default, and Django's advice under ASGI: each request's sync
    # code runs in a thread of its own, so a persistent connection is never
    # reused nor closed. With 60 (stack_env's, for make bench's connect
    # bursts) steady REST publishing filled PostgreSQL's 500 connections in
    # two minutes and every publish failed (503) from then on.
    with bench_stack("Soak", HERALD_DB_CONN_MAX_AGE="0") as (_, env, tenant):
        try:
            print(describe(args, warmup, logs), flush=True)
            print(
                f"Before the run, other processes kept {busy_cores():.2f} cores busy."
            )
            for i in range(args.processes):
                servers.append(Server(env, log=logs / f"herald-{i}.log"))
            config = {
                "mode": "soak",
                "ws": [s.ws_url for s in servers],
                "root": str(ROOT),
                "publish": args.publish,
                "publishHttp": [s.url for s in servers],
                "publisherCmd": [
                    *(sys.executable, "-m", "benchmarks.publisher"),
                    *(tenant["tenant"], TABLE),
                ],
                "apikey": tenant["secret_key"],
                "vsn": "2.0.0",
                "table": TABLE,
                "count": args.connections,
                "streams": args.streams,
                "rate": args.rate,
                "soakSeconds": soak_seconds,
                "tickSeconds": args.tick,
                "settleSeconds": 10,
                "maxReconnects": 20,
                "connectConcurrency": 64,
                "prime": args.prime,
                "serverPid": [s.process.pid for s in servers],
                "clockTicks": os.sysconf("SC_CLK_TCK"),
                "maxSeconds": soak_seconds + 900,
            }
            gen = LoadGen(config, log=logs / "loadgen.log")
            sampler = Sampler(servers)
            try:
                for event in gen.events():
                    if event["event"] == "ready":
                        sample = sampler.sample({**event, "event": "ready"})
                        rss = ", ".join(f"{kb / 1024:.1f}" for kb in sample["rss_kb"])
                        failed = f"{event['failed']} failed"
                        if event["failed"]:
                            failed += f": {event['first_error']}"
                        print(
                            f"{event['open']:,} joined in {event['connect_s']:.1f}s "
                            f"({failed}); RSS MB per process: {rss}. "
                            f"Publishing {args.rate:g}/s for {args.minutes:g} min.",
                            flush=True,
                        )
                        sampler.samples.clear()  # the samples are those under load
                        sampler.start = time.monotonic()  # time from the first publish
                        print(header(len(servers)), flush=True)
                    elif event["event"] in ("tick", "done"):
                        print(line(sampler.sample(event)), flush=True)
                        if event["event"] == "done":
                            gen.tell("close")  # read: the sockets may go
                            break
            finally:
                gen.wait()
        finally:
            for server in servers:
                server.stop()
    samples = sampler.samples if sampler else []
    if not samples or samples[-1]["event"] != "done":
        print(f"The soak did not finish; logs in {logs}")
        return 1
    ok, lines = verdict(samples, warmup, args.threshold)
    last = samples[-1]["loadgen"]
    posts = last["posts"]
    print(
        f"published {last['published']:,} changes ({posts['failed']} failed"
        f"{': ' + str(posts['first_error']) if posts['failed'] else ''}); "
        f"connections per process at the end (herald_connections): "
        f"{', '.join(f'{c:.0f}' for c in samples[-1]['server_connections'])}"
    )
    print("\n".join(lines))
    print(f"soak: {'PASS' if ok else 'FAIL'}")
    if args.json:
        args.json.write_text(json.dumps(samples, indent=2))
    return 0 if ok else 1


def describe(args: argparse.Namespace, warmup: float, logs: Path) -> str:
    publishing = (
        "POST /api/changes, spread over the processes (database write included)"
        if args.publish == "rest"
        else "straight to the channel layer (benchmarks/publisher.py)"
    )
    return (
        f"Stack: {versions()}; {os.cpu_count()} CPUs; {args.processes} Herald "
        f"processes (manage.py serve); {args.connections:,} sockets over "
        f"{args.streams} streams, one load generator.\n"
        f"Publishing {args.rate:g} changes/s for {args.minutes:g} min: {publishing}."
        f"\nMemory is steady {warmup:.0f}s after publishing starts; growth of "
        f"{args.threshold:g}% or more fails. Logs: {logs}"
    )


if __name__ == "__main__":
    sys.exit(main())
