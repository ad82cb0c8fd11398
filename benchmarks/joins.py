"""`make bench-joins`: a reconnect storm, as after a deploy, measured.

Starts a throwaway Redis and PostgreSQL and one or more Herald processes
(default settings), opens N sockets spread over them with the publishable key,
then has every socket join at once as supabase-js does: its own user token
in the join, a binding with a per-user filter. Prints connects and joins per
second, each server's CPU per join, the client's CPU share, and how many were
refused or timed out. Every socket's reply is checked: a join counts only when
its reply is `ok` with the binding's id.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jwt
import orjson
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.processes import bench_stack, raise_fd_limit  # noqa: E402
from tests.server import Server  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=60, help="per phase")
    return parser.parse_args()


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


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def storm(args: argparse.Namespace, servers: list[Server], tenant: Any) -> None:
    key, secret, slug = (
        tenant["publishable_key"],
        tenant["jwt_secret"],
        tenant["tenant"],
    )
    frames = [join_frame(n, token(secret, slug, n)) for n in range(args.sockets)]
    urls = [
        f"{servers[n % len(servers)].ws_url}/realtime/v1/websocket"
        f"?apikey={key}&vsn=2.0.0"
        for n in range(args.sockets)
    ]

    async def opened(url: str) -> Any:
        return await connect(url, open_timeout=args.timeout, max_size=None)

    cpu0 = [cpu_seconds(s.process.pid) for s in servers]
    client0, start = own_cpu(), time.monotonic()
    results = await asyncio.gather(*map(opened, urls), return_exceptions=True)
    sockets = [r for r in results if not isinstance(r, BaseException)]
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        print(f"  {len(failures)} connects failed, e.g. {failures[0]!r}")
    connect_s = time.monotonic() - start
    cpu1 = [cpu_seconds(s.process.pid) for s in servers]
    client1, start = own_cpu(), time.monotonic()
    joined = await asyncio.wait_for(
        asyncio.gather(
            *(join(ws, frames[n]) for n, ws in enumerate(sockets)),
            return_exceptions=True,
        ),
        timeout=args.timeout,
    )
    join_s = time.monotonic() - start
    cpu2 = [cpu_seconds(s.process.pid) for s in servers]
    client2 = own_cpu()
    ok = sum(1 for r in joined if r is True)
    print(f"\nReconnect storm: {args.sockets} sockets, {len(servers)} process(es)")
    print(
        f"  connected {len(sockets)} in {connect_s:.2f} s "
        f"({len(sockets) / connect_s:,.0f}/s), client CPU "
        f"{(client1 - client0) / connect_s:.0%} of a core"
    )
    print(
        f"  joined    {ok} in {join_s:.2f} s ({ok / join_s:,.0f}/s), "
        f"refused or failed {len(joined) - ok}, not connected "
        f"{args.sockets - len(sockets)}, client CPU "
        f"{(client2 - client1) / join_s:.0%} of a core"
    )
    share = max(1, ok // len(servers))
    for n in range(len(servers)):
        print(
            f"  server {n + 1}: {(cpu1[n] - cpu0[n]) * 1e3 / max(1, len(sockets)):.2f} "
            f"ms CPU per connect, {(cpu2[n] - cpu1[n]) * 1e3 / share:.2f} ms per join"
        )
    for ws in sockets:
        with contextlib.suppress(Exception):
            await ws.close()


def main() -> int:
    args = parse_args()
    raise_fd_limit()
    # Default settings: no persistent database connections.
    conn_max_age = os.environ.get("HERALD_DB_CONN_MAX_AGE", "0")
    stack_of = bench_stack("Joins", HERALD_DB_CONN_MAX_AGE=conn_max_age)
    with stack_of as (_redis, env, tenant), contextlib.ExitStack() as stack:
        logs = Path(tempfile.mkdtemp(prefix="herald-bench-joins-"))
        servers = []
        for n in range(args.processes):
            server = Server(env, log=logs / f"server-{n + 1}.log")
            stack.callback(server.stop)
            servers.append(server)
        asyncio.run(storm(args, servers, tenant))
    return 0


if __name__ == "__main__":
    sys.exit(main())
