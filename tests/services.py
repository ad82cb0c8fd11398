"""Throwaway Redis and PostgreSQL for a test run, on free loopback ports.

Loaded as a plugin (`-p tests.services`) so the servers are up and
DATABASE_URL / REDIS_URL are set before pytest-django reads the settings.
Set HERALD_TEST_EXTERNAL=1 to use DATABASE_URL / REDIS_URL as given instead.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Generator
from pathlib import Path

import pytest

STARTUP_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, *, timeout: float = STARTUP_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), 0.2),
        ):
            return
        time.sleep(0.05)
    raise RuntimeError(f"Nothing listens on 127.0.0.1:{port} after {timeout}s")


def postgres_bin(name: str) -> str:
    """A PostgreSQL server binary: on PATH, else Debian's versioned folder."""
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if not found:
        raise RuntimeError(f"{name} not found: run `make deps` (installs postgresql)")
    return found


def _as_postgres_user(cmd: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; CI and these machines run as root.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


class Redis:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.start()

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if not binary:
            raise RuntimeError("redis-server not found: run `make deps`")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--maxclients",
                "10000",
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)

    def restart(self) -> None:
        """A new, empty Redis on the same port (nothing is persisted)."""
        self.stop()
        self.start()


class Postgres:
    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable
        self.root = Path(tempfile.mkdtemp(prefix="herald-pg-"))
        data, sockets = self.root / "data", self.root / "run"
        sockets.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            shutil.chown(sockets, "postgres")
        subprocess.run(
            _as_postgres_user(
                [
                    postgres_bin("initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        self.port = free_port()
        self.admin_url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/herald"
        self.start()

    def start(self) -> None:
        # Durability off: this cluster lives for one test run. A benchmark of
        # what a write costs asks for the defaults (`durable`) instead.
        settings = (
            []
            if self.durable
            else [
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]
        )
        self.process = subprocess.Popen(
            _as_postgres_user(
                [
                    postgres_bin("postgres"),
                    "-D",
                    str(self.root / "data"),
                    "-p",
                    str(self.port),
                    "-h",
                    "127.0.0.1",
                    "-k",
                    str(self.root / "run"),
                    *settings,
                    "-c",
                    "max_connections=500",
                ]
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)
        self._wait_ready()

    def _wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """The port opens before PostgreSQL accepts sessions ("starting up")."""
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.admin_url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def halt(self) -> None:
        """Stop the server, keeping its data (an outage; `start` ends it)."""
        self.process.terminate()
        self.process.wait(20)

    def stop(self) -> None:
        self.halt()
        shutil.rmtree(self.root, ignore_errors=True)


_started: list[Redis | Postgres] = []


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> Generator[None]:
    # A wrapper runs before pytest-django's own hook, which reads the settings.
    os.environ.setdefault("HERALD_EXTRA_APPS", "tests.tracked")
    # Every test client comes from 127.0.0.1: the per-IP limit on failed
    # authentication (30/m) would trip across tests. Its own tests set it.
    os.environ.setdefault("HERALD_AUTH_FAILURE_RATE", "100000/m")
    if not os.environ.get("HERALD_TEST_EXTERNAL"):
        redis, postgres = Redis(), Postgres()
        _started.extend([redis, postgres])
        os.environ["REDIS_URL"] = redis.url
        os.environ["DATABASE_URL"] = postgres.url
        os.environ["HERALD_TEST_PG_ADMIN_URL"] = postgres.admin_url
    return (yield)


def pytest_unconfigure(config: pytest.Config) -> None:
    while _started:
        _started.pop().stop()
