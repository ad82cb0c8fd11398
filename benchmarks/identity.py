"""`make bench-identity`: what outside identity costs a join and a delivery.

One run, one Herald process on a throwaway Redis and PostgreSQL:

1. Joins: for each kind of token (HS256 signed with the tenant's secret, and
   RS256 and ES256 from two trusted issuers whose JWKS this process serves on
   loopback), `--joiners` sockets connect with the publishable key, then all
   join at once, each with its own token and a filtered binding (as
   benchmarks/joins.py). The issuers' keys are fetched before the measured
   rounds, so the figures are warm-cache verification. Kinds alternate over
   `--rounds`; joins/s and the server's CPU per join are summed over rounds.
2. Deliveries: `--subscribers` sockets join a table whose row policy is
   `site_id = claims.site_id` (equality), and as many join a table whose
   policy is `site_id in claims.site_ids` (membership, `--match-any`), each
   token naming the same one site of ten; changes go straight to the channel
   layer (as `make bench`), `--changes` per policy and round, and every socket
   must receive exactly its site's. Deliveries/s and CPU per delivery.

Goals (issue 15): warm asymmetric tokens at most 1.5x HS256's CPU per join;
membership within 10% of equality's deliveries/s. The machine is shared:
CPU per join or delivery is the steadier figure, and `cores busy` says how
much else ran.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import orjson
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# The modules imported below load Herald's models: Django must be set up. Its
# settings are those of this environment, not the stack's: this process
# touches no database itself (changes go through benchmarks/publisher.py).
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
import django  # noqa: E402

django.setup()

from benchmarks.joins import cpu_seconds, join, join_frame  # noqa: E402
from benchmarks.processes import bench_stack, raise_fd_limit  # noqa: E402
from tests.issuers import JwksServer, KeyPair, claims, jwks_of, key_pair  # noqa: E402
from tests.server import Server, manage  # noqa: E402

KINDS = ("HS256", "RS256", "ES256")
ISSUER = {"RS256": "https://rs.bench.example/", "ES256": "https://es.bench.example/"}
POLICIES = {"equality": "orders_eq", "membership": "orders_any"}
SITES = 10


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--joiners", type=int, default=300, help="per kind, round")
    parser.add_argument("--subscribers", type=int, default=200, help="per policy")
    parser.add_argument("--changes", type=int, default=1000, help="per policy, round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=60)
    return parser.parse_args()


def cores_busy() -> float:
    """All CPUs' busy time since boot, in seconds (for `cores busy`)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(x) for x in fields]
    idle = ticks[3] + ticks[4]
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass
class Tally:
    count: int = 0
    seconds: float = 0.0
    cpu: float = 0.0
    busy: float = 0.0
    failed: int = 0
    extra: list[str] = field(default_factory=list)

    def add(self, count: int, seconds: float, cpu: float, busy: float) -> None:
        self.count += count
        self.seconds += seconds
        self.cpu += cpu
        self.busy += busy

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    @property
    def cpu_each_us(self) -> float:
        return self.cpu * 1e6 / self.count if self.count else 0.0


class Tokens:
    def __init__(self, tenant: dict[str, Any], pairs: dict[str, KeyPair]) -> None:
        self.secret, self.slug, self.pairs = (
            tenant["jwt_secret"],
            tenant["tenant"],
            pairs,
        )

    def make(self, kind: str, n: int, **extra: Any) -> str:
        payload = {"role": "authenticated", "sub": f"user-{n}", **extra}
        if kind == "HS256":
            payload.update(ref=self.slug, exp=int(time.time()) + 3600)
            return jwt.encode(payload, self.secret, algorithm="HS256")
        return self.pairs[kind].sign(claims(ISSUER[kind], ttl=3600, **payload))


def setup_tenant(env: dict[str, str], slug: str, jwks_url: str) -> None:
    for kind, iss in ISSUER.items():
        manage(
            env,
            *("add_issuer", "--tenant", slug, "--issuer", iss),
            *("--jwks-url", jwks_url, "--algorithms", kind),
        )
    for flag, table in (("--match", "orders_eq"), ("--match-any", "orders_any")):
        claim = "site_id" if flag == "--match" else "site_ids"
        manage(
            env,
            *("add_row_policy", "--tenant", slug, "--table", table),
            *("--role", "authenticated", flag, f"site_id={claim}"),
        )


async def opened(server: Server, key: str, count: int, timeout: float) -> list[Any]:
    """`count` sockets, 50 handshakes at a time (not measured): on a busy
    machine daphne drops handshakes left waiting past 5 s."""
    url = f"{server.ws_url}/realtime/v1/websocket?apikey={key}&vsn=2.0.0"
    gate = asyncio.Semaphore(50)

    async def one() -> Any:
        async with gate:
            return await connect(url, open_timeout=timeout, max_size=None)

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def closed(sockets: list[Any]) -> None:
    for ws in sockets:
        with contextlib.suppress(Exception):
            await ws.close()


async def join_round(
    server: Server, key: str, tokens: Tokens, kind: str, base: int, args: Any
) -> tuple[int, int, float, float, float]:
    sockets = await opened(server, key, args.joiners, args.timeout)
    frames = [
        join_frame(base + n, tokens.make(kind, base + n, site_id=n % 100))
        for n in range(len(sockets))
    ]
    cpu0, busy0, start = cpu_seconds(server.process.pid), cores_busy(), time.monotonic()
    results = await asyncio.wait_for(
        asyncio.gather(
            *(join(ws, frames[n]) for n, ws in enumerate(sockets)),
            return_exceptions=True,
        ),
        timeout=args.timeout,
    )
    seconds = time.monotonic() - start
    cpu, busy = cpu_seconds(server.process.pid) - cpu0, cores_busy() - busy0
    await closed(sockets)
    ok = sum(1 for r in results if r is True)
    return ok, len(results) - ok, seconds, cpu, busy


def subscribe_frame(table: str, token: str) -> str:
    binding = {"event": "*", "schema": "public", "table": table}
    payload = {"config": {"postgres_changes": [binding]}, "access_token": token}
    return orjson.dumps(["1", "1", f"realtime:{table}", "phx_join", payload]).decode()


class Publisher:
    """benchmarks/publisher.py: changes straight to the channel layer (as
    `make bench`), one line a batch, each acknowledged."""

    def __init__(self, slug: str, table: str) -> None:
        self.process = subprocess.Popen(  # noqa: S603 - fixed arguments
            [sys.executable, str(ROOT / "benchmarks" / "publisher.py"), slug, table],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("[]\n")  # ready (Django set up) before the clock
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "ok"

    def publish(self, first: int, count: int, batch: int = 20) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        for start in range(first, first + count, batch):
            records = [
                {"id": n, "site_id": n % SITES, "bench_n": n}
                for n in range(start, min(start + batch, first + count))
            ]
            self.process.stdin.write(orjson.dumps(records).decode() + "\n")
            self.process.stdin.flush()
            assert self.process.stdout.readline().strip() == "ok"

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(10)


async def received(ws: Any, due: int, timeout: float) -> list[int]:
    sites: list[int] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while len(sites) < due:
                frame = orjson.loads(await ws.recv())
                if frame[3] == "postgres_changes":
                    sites.append(frame[4]["data"]["record"]["site_id"])
    return sites


async def delivery_round(
    server: Server, key: str, tokens: Tokens, policy: str, first: int, args: Any
) -> tuple[int, int, float, float, float]:
    table = POLICIES[policy]
    sockets = await opened(server, key, args.subscribers, args.timeout)
    for n, ws in enumerate(sockets):
        site = n % SITES
        token = tokens.make("HS256", n, site_id=site, site_ids=[site])
        assert await join(ws, subscribe_frame(table, token)), "join refused"
    due = args.changes // SITES  # changes first..first+changes, sites evenly
    publisher = Publisher(tokens.slug, table)  # started before the clock
    cpu0, busy0, start = cpu_seconds(server.process.pid), cores_busy(), time.monotonic()
    receiving = [asyncio.create_task(received(ws, due, args.timeout)) for ws in sockets]
    await asyncio.to_thread(publisher.publish, first, args.changes)
    got = await asyncio.gather(*receiving)
    seconds = time.monotonic() - start
    cpu, busy = cpu_seconds(server.process.pid) - cpu0, cores_busy() - busy0
    publisher.close()
    await closed(sockets)
    wrong = sum(
        1
        for n, sites in enumerate(got)
        if len(sites) != due or any(s != n % SITES for s in sites)
    )
    return sum(len(s) for s in got), wrong, seconds, cpu, busy


async def measure(env: dict[str, str], tenant: dict[str, Any], args: Any) -> int:
    pairs = {"RS256": key_pair("RSA"), "ES256": key_pair("EC")}
    jwks = JwksServer(jwks_of(*pairs.values()))
    try:
        setup_tenant(env, tenant["tenant"], jwks.url)
        server = Server(env, log=Path(tempfile.mkdtemp(prefix="herald-id-")) / "log")
        try:
            return await run_rounds(server, tenant, Tokens(tenant, pairs), args)
        finally:
            server.stop()
    finally:
        jwks.stop()


async def run_rounds(
    server: Server, tenant: dict[str, Any], tokens: Tokens, args: Any
) -> int:
    key = tenant["publishable_key"]
    # Warm: each issuer's JWKS fetched, every code path run once.
    for kind in KINDS:
        (ws,) = await opened(server, key, 1, args.timeout)
        assert await join(ws, join_frame(0, tokens.make(kind, 0, site_id=0)))
        await ws.close()
    warm = argparse.Namespace(**{**vars(args), "subscribers": SITES, "changes": 50})
    for policy in POLICIES:  # each table's streams made, unmeasured
        await delivery_round(server, key, tokens, policy, 10**6, warm)
    joins = {kind: Tally() for kind in KINDS}
    deliveries = {policy: Tally() for policy in POLICIES}
    base = 1
    for round_n in range(args.rounds):
        order = KINDS if round_n % 2 == 0 else KINDS[::-1]
        for kind in order:
            ok, failed, seconds, cpu, busy = await join_round(
                server, key, tokens, kind, base, args
            )
            base += args.joiners
            joins[kind].add(ok, seconds, cpu, busy)
            joins[kind].failed += failed
        policies = list(POLICIES) if round_n % 2 == 0 else list(POLICIES)[::-1]
        for policy in policies:
            count, wrong, seconds, cpu, busy = await delivery_round(
                server, key, tokens, policy, round_n * args.changes, args
            )
            deliveries[policy].add(count, seconds, cpu, busy)
            deliveries[policy].failed += wrong
    return report(joins, deliveries, args)


def report(joins: dict[str, Tally], deliveries: dict[str, Tally], args: Any) -> int:
    print(
        f"\nJoins: {args.joiners} sockets per kind and round, {args.rounds} rounds, "
        "warm issuer keys"
    )
    print("| token | joins/s | server CPU per join | vs HS256 | cores busy | failed |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    hs = joins["HS256"].cpu_each_us
    for kind, t in joins.items():
        print(
            f"| {kind} | {t.rate:,.0f} | {t.cpu_each_us / 1e3:.2f} ms | "
            f"{t.cpu_each_us / hs:.2f}x | {t.busy / t.seconds:.1f} | {t.failed} |"
        )
    print(
        f"\nDeliveries: {args.subscribers} subscribers per policy, one site of "
        f"{SITES} each, {args.changes} changes per policy and round"
    )
    print(
        "| row policy | deliveries/s | server CPU per delivery | cores busy | wrong |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for policy, t in deliveries.items():
        print(
            f"| {policy} | {t.rate:,.0f} | {t.cpu_each_us:.1f} µs | "
            f"{t.busy / t.seconds:.1f} | {t.failed} |"
        )
    worst = max(joins["RS256"].cpu_each_us, joins["ES256"].cpu_each_us) / hs
    eq, any_ = deliveries["equality"], deliveries["membership"]
    rate_change = any_.rate / eq.rate - 1
    cpu_change = any_.cpu_each_us / eq.cpu_each_us - 1
    print(
        f"\nGoal, asymmetric CPU per join <= 1.5x HS256: {worst:.2f}x, "
        f"{'met' if worst <= 1.5 else 'NOT met'}"
    )
    print(
        f"Goal, membership changes deliveries/s by < 10%: {rate_change:+.1%} "
        f"(CPU per delivery {cpu_change:+.1%}), "
        f"{'met' if abs(rate_change) < 0.10 else 'NOT met'}"
    )
    failures = sum(t.failed for t in (*joins.values(), *deliveries.values()))
    return 1 if failures else 0


def main() -> int:
    args = parse_args()
    raise_fd_limit()
    with bench_stack("Identity") as (_redis, env, tenant):
        return asyncio.run(measure(env, tenant, args))


if __name__ == "__main__":
    sys.exit(main())
