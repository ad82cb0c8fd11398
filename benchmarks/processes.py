"""The processes a benchmark run starts: servers, the load generator, py-spy.

And the stack under them: a throwaway Redis and PostgreSQL (tests/services.py),
a migrated database and a tenant whose socket limits let the load through.
"""

# It starts local tools (daphne, node, py-spy, redis-server) with fixed arguments.
# ruff: noqa: S603, S607

from __future__ import annotations

import collections
import contextlib
import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import psycopg.sql
import redis as redis_py

from realtime.management.commands.serve import daphne_args
from tests.server import Server, manage
from tests.services import Postgres, Redis, postgres_bin

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
HERALD_APP = "config.asgi:application"
NAIVE_APP = "benchmarks.naive_asgi:application"


class NaiveServer(Server):
    """tests.server.Server (`manage.py serve`), serving the naive application.

    Same daphne options as `manage.py serve`; only the application differs.
    """

    def command(self) -> list[str]:
        args = daphne_args(host="127.0.0.1", port=self.port, extra=[])
        assert args[-1] == HERALD_APP, args
        return [sys.executable, "-m", "daphne", *args[:-1], NAIVE_APP]


class CeilingServer(Server):
    """benchmarks/ceiling.py, joined to the stream group `group` on the layer."""

    def __init__(
        self, env: dict[str, str], *, log: Path, group: str, send: str = "prepared"
    ) -> None:
        self.group, self.send = group, send
        super().__init__(env, log=log)

    def command(self) -> list[str]:
        return [
            *(sys.executable, "-m", "benchmarks.ceiling", "--port", str(self.port)),
            *("--redis", self.env["REDIS_URL"], "--group", self.group),
            *("--send", self.send),
        ]


class SocketIOServer(Server):
    """benchmarks/socketio_server.js: Socket.IO 4 with the Redis adapter."""

    def command(self) -> list[str]:
        script = str(HERE / "socketio_server.js")
        return ["node", script, str(self.port), self.env["REDIS_URL"]]


def rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("VmRSS:"))
    return int(line.split()[1])


class LoadGen:
    """One run of loadgen.mjs; its stdout is JSON lines, killed past its limit."""

    def __init__(self, config: dict[str, Any], *, log: Path) -> None:
        self._log = open(log, "ab")  # noqa: SIM115 - closed in wait()
        self.log_path = log
        # In a file: a thousand user tokens outgrow one argument (128 KB).
        mode = config.get("mode", "run")
        config_file = log.with_name(f"{log.stem}-{mode}-config.json")
        config_file.write_text(json.dumps(config))
        self.process = subprocess.Popen(
            ["node", str(HERE / "loadgen.mjs"), str(config_file)],
            cwd=HERE,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self._watchdog = threading.Timer(config["maxSeconds"] + 30, self.process.kill)
        self._watchdog.start()

    def events(self) -> Iterator[dict[str, Any]]:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if not line.startswith("{"):
                continue
            event = json.loads(line)
            if event.get("event") == "error":
                raise RuntimeError(f"load generator: {event['error']}")
            yield event

    def next_event(self, name: str) -> dict[str, Any]:
        for event in self.events():
            if event.get("event") == name:
                return event
        self.wait()
        tail = self.log_path.read_text()[-2000:]
        raise RuntimeError(f"load generator exited before {name!r}:\n{tail}")

    def tell(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def wait(self) -> None:
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self._watchdog.cancel()
        self._log.close()


class Profiler:
    """py-spy on the server for one phase, as collapsed stacks."""

    def __init__(self, pid: int, seconds: float, out: Path) -> None:
        exe = shutil.which(
            "py-spy", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}"
        )
        if exe is None:
            raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
        self.out = out
        self.rate = 250
        self.process = subprocess.Popen(
            [
                *(exe, "record", "--pid", str(pid), "--duration", str(int(seconds))),
                *("--rate", str(self.rate), "--format", "raw", "--nonblocking"),
                *("-o", str(out)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.seconds = int(seconds)

    def summary(self, top: int = 15) -> list[str]:
        self.process.wait(self.seconds + 30)
        return profile_summary(self.out, self.seconds * self.rate, top)


def profile_summary(path: Path, expected: int, top: int) -> list[str]:
    """Self and inclusive shares of the hottest functions in collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [_short(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
    lines = [f"{total} busy samples of ~{expected} ({total / expected:.0%} of wall)"]
    lines.append("self time:")
    lines += [f"  {n / total:6.1%}  {f}" for f, n in own.most_common(top)]
    lines.append("inclusive:")
    lines += [f"  {n / total:6.1%}  {f}" for f, n in inclusive.most_common(top)]
    return lines


def _short(frame: str) -> str:
    # "send (twisted/internet/abstract.py:341)" -> "send (twisted/internet/abstract.py)"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", str(ROOT) + "/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where})" if where else name


# --- the stack ---------------------------------------------------------------------


def busy_cores(seconds: float = 2.0) -> float:
    """How many cores are busy now (other test runs may share the machine)."""

    def busy() -> float:
        fields = [int(x) for x in Path("/proc/stat").read_text().split()[1:9]]
        return sum(fields) - fields[3] - fields[4]  # all but idle and iowait

    start = busy()
    time.sleep(seconds)
    return (busy() - start) / os.sysconf("SC_CLK_TCK") / seconds


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def create_database(pg: Postgres) -> None:
    # The port opens before PostgreSQL accepts logins ("starting up").
    deadline = time.monotonic() + 30
    while True:
        try:
            with psycopg.connect(pg.admin_url, autocommit=True) as conn:
                conn.execute("CREATE DATABASE herald")
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# Per-tenant socket limits (Supabase's defaults: 200 concurrent users, 100 joins
# a second, ...) would refuse the load generator's 5,000 sockets on one key.
TENANT_LIMITS = (
    "max_concurrent_users",
    "max_connections_per_user",
    "max_channels_per_client",
    "max_joins_per_second",
    "max_events_per_second",
)
LIFT_LIMITS = """
from realtime.models import Tenant
names = {{f.name for f in Tenant._meta.get_fields()}}
limits = {{name: 1_000_000 for name in {limits!r} if name in names}}
Tenant.objects.filter(slug={slug!r}).update(**limits)
"""


def lift_limits(env: dict[str, str], slug: str) -> None:
    manage(env, "shell", "-c", LIFT_LIMITS.format(limits=TENANT_LIMITS, slug=slug))


def stack_env(redis: Redis, pg: Postgres) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "HERALD_EXTRA_APPS"}
    env.update(
        DATABASE_URL=pg.url,
        REDIS_URL=redis.url,
        # Persistent connections, as a deployment would run: 6,000 connects
        # otherwise open 6,000 PostgreSQL connections one after the other.
        HERALD_DB_CONN_MAX_AGE="60",
        HERALD_SECRET_KEY=secrets.token_hex(32),
        PYTHONPATH=str(ROOT),
    )
    return env


@contextlib.contextmanager
def bench_stack(
    tenant_name: str, *, preload: str = "", **overrides: str
) -> Iterator[tuple[Redis, dict[str, str], dict[str, Any]]]:
    """A fresh Redis and PostgreSQL with Herald migrated and one tenant whose
    socket limits are lifted; both stopped on the way out.

    Yields (redis, env, tenant): `env` is stack_env's with `overrides`, and is
    made this process's too (benchmarks/publisher.py, started by the load
    generator, reads it); `tenant` is `create_tenant --json`'s answer.
    `preload` names PostgreSQL libraries to load (pg_stat_statements, say).
    """
    with contextlib.ExitStack() as stack:
        redis = Redis()
        stack.callback(redis.stop)
        pg = Postgres()
        stack.callback(pg.stop)
        create_database(pg)
        if preload:
            with psycopg.connect(pg.admin_url, autocommit=True) as conn:
                conn.execute(
                    psycopg.sql.SQL(
                        "ALTER SYSTEM SET shared_preload_libraries = {}"
                    ).format(psycopg.sql.Literal(preload))
                )
            pg.halt()
            pg.start()
        env = {**stack_env(redis, pg), **overrides}
        os.environ.update(env)
        manage(env, "migrate", "--noinput")
        tenant = json.loads(manage(env, "create_tenant", tenant_name, "--json"))
        lift_limits(env, tenant["tenant"])
        yield redis, env, tenant


def versions() -> str:
    redis = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True
    ).stdout.split()
    redis_v = next((w[2:] for w in redis if w.startswith("v=")), "?")
    pg = subprocess.run(
        [postgres_bin("postgres"), "--version"], capture_output=True, text=True
    ).stdout.split()[2]
    node = subprocess.run(["node", "--version"], capture_output=True, text=True)
    return f"PostgreSQL {pg}, Redis {redis_v}, Node {node.stdout.strip()}"


def redis_flush(redis: Redis) -> None:
    # A previous server's group memberships would still receive every change.
    redis_py.Redis.from_url(redis.url).flushall()
