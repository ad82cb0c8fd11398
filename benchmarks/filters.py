"""`make bench-filters`: does a change cost what it matches, not what exists?

The issue's goal: with 10,000 distinct filters on one table, a change that
matches 10 of them costs at most twice the server CPU of a change matching
10 of 100 filters. Measured in one process, on the hub's own fan-out
(`Hub.add`, `Hub.dispatch_changes`, realtime/fanout_index.py): N channels,
each its own audience (its own token's claims), each with a distinct filter
on `orders`; ten of them match the change (`site_id=in.(5,<k>)`, ten distinct
filters), the others do not (`site_id=eq.<n>`). The frames are built as for a
real delivery but not written (no sockets: this is the matching's cost).
No Redis, no database: the in-memory layer, the table's policies preset.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GOAL_RATIO = 2.0
MATCHING = 10


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--few", type=int, default=100)
    parser.add_argument("--many", type=int, default=10_000)
    parser.add_argument("--changes", type=int, default=2000)
    return parser.parse_args()


def filter_of(n: int) -> str:
    if n < MATCHING:
        return f"site_id=in.(5,{1_000_000 + n})"  # distinct, and all match site 5
    return f"site_id=eq.{1000 + n}"


async def cpu_per_change(filters: int, changes: int) -> tuple[float, int]:
    """Server CPU seconds per change, and the channels each change reached."""
    from realtime.auth import Principal
    from realtime.bindings import parse_bindings
    from realtime.fastsend import Outbox
    from realtime.hub import Hub, Member
    from realtime.layer import stream_group
    from realtime.models import Tenant
    from realtime.protocol import codec_for_vsn

    hub = Hub()
    tenant = Tenant(pk=1, slug="bench", name="bench", jwt_secret="x" * 32)
    codec = codec_for_vsn("2.0.0")
    assert codec is not None

    async def send(message: dict[str, Any]) -> None:
        return None

    for n in range(filters):
        binding = {"event": "*", "schema": "public", "table": "orders"}
        bindings, _ = parse_bindings([{**binding, "filter": filter_of(n)}])
        principal = Principal(
            tenant=tenant, role="service_role", claims={"sub": f"user-{n}"}
        )
        member = Member(
            send=send,
            codec=codec,
            topic=f"realtime:user-{n}",
            bindings=tuple(bindings),
            principal=principal,
        )
        await hub.add(member)
    # The table's row policies, as the cache would hold them (service_role
    # sees every row; none are read).
    hub.policies._entries[1, "orders"] = (time.monotonic() + 1e9, {})
    stream = stream_group(1, "orders")
    data = {
        "type": "INSERT",
        "schema": "public",
        "table": "orders",
        "record": {"id": 1, "site_id": 5},
        "old_record": None,
        "commit_timestamp": "2026-12-02T00:00:00.000Z",
        "seq": 1,
    }
    message = {"stream": stream, "tenant": 1, "data": [orjson.dumps(data)]}
    reached = 0
    start = time.process_time()
    for _ in range(changes):
        outbox = Outbox()
        await hub.dispatch_changes(message, outbox)
        reached = len(outbox.flush())
    cpu = (time.process_time() - start) / changes
    for task in hub._tasks:
        task.cancel()
    return cpu, reached


def main() -> int:
    args = parse_args()
    # The embedded default's layer and caches: nothing outside this process.
    for name in ("REDIS_URL", "DATABASE_URL"):
        os.environ.pop(name, None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    results = {}
    for filters in (args.few, args.many):
        cpu, reached = asyncio.run(cpu_per_change(filters, args.changes))
        results[filters] = cpu
        print(
            f"{filters:>6} distinct filters on one table, one change: "
            f"{cpu * 1e6:8.1f} µs CPU per change, reached {reached} channels"
        )
    ratio = results[args.many] / results[args.few]
    verdict = "PASS" if ratio <= GOAL_RATIO else "MISS"
    print(
        f"ratio {args.many:,} / {args.few:,} filters: {ratio:.2f}x "
        f"(goal at most {GOAL_RATIO:.0f}x) {verdict}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
