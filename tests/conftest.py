"""Shared fixtures: tenants, API clients, and a listener on the channel layer."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import pytest
from rest_framework.test import APIClient

from realtime.layer import stream_group
from realtime.services.tenants import TenantCredentials, tenant_create


@pytest.fixture(scope="session", autouse=True)
def _flush_survives_server_writes() -> None:
    """Retry the between-tests TRUNCATE when it loses a deadlock.

    Server processes write after a test's sockets close (leave and disconnect
    activity rows, batched subscription counts). PostgreSQL may pick the flush
    as the deadlock victim; a moment later the writes are done.
    """
    import time

    from django.core.management.base import CommandError
    from django.db import OperationalError
    from django.test.testcases import TransactionTestCase

    original = TransactionTestCase._fixture_teardown

    def teardown(self: TransactionTestCase) -> None:
        for attempt in range(10):
            try:
                return original(self)
            except CommandError as exc:
                deadlock = isinstance(exc.__cause__, OperationalError) and (
                    "deadlock" in str(exc.__cause__)
                )
                if not deadlock or attempt == 9:
                    raise
                time.sleep(0.2)

    TransactionTestCase._fixture_teardown = teardown  # type: ignore[method-assign]


@pytest.fixture
def make_tenant(db: None) -> Callable[..., TenantCredentials]:
    counter = iter(range(1, 10_000))

    def make(name: str | None = None, **kwargs: Any) -> TenantCredentials:
        return tenant_create(name=name or f"Tenant {next(counter)}", **kwargs)

    return make


@pytest.fixture
def tenant(make_tenant: Callable[..., TenantCredentials]) -> TenantCredentials:
    return make_tenant("Acme")


@pytest.fixture
def api() -> APIClient:
    return APIClient()


class StreamListener:
    """What a server process's relay hands its fan-out for one (tenant, table)
    stream: the `stream.changes` messages built from committed log rows.

    It reads through realtime.relay's reader on a thread of its own, so with a
    database connection of its own: it sees only what has committed.
    """

    def __init__(self, tenant_id: int, table: str) -> None:
        from realtime.relay import LogReader

        self.executor = ThreadPoolExecutor(1)
        self.group = stream_group(tenant_id, table)
        self.reader = LogReader()
        self.executor.submit(self.reader.start).result()
        self.pending: list[dict[str, Any]] = []

    def _poll(self) -> list[dict[str, Any]]:
        from realtime.layer import changes_messages

        batch = self.reader.read()
        messages = changes_messages(batch.changes) if batch.changes else []
        return [m for m in messages if m["stream"] == self.group]

    def _fill(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.pending) < count and time.monotonic() < deadline:
            self.pending += self.executor.submit(self._poll).result()
            if len(self.pending) < count:
                time.sleep(0.05)

    def receive(self, *, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        self._fill(count, timeout)
        if len(self.pending) < count:
            raise TimeoutError(f"{len(self.pending)} messages came, not {count}")
        found, self.pending = self.pending[:count], self.pending[count:]
        return found

    def changes(self, *, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The next `count` changes (a message carries one read's), decoded."""
        found: list[dict[str, Any]] = []
        while len(found) < count:
            [message] = self.receive(count=1, timeout=timeout)
            found += [orjson.loads(data) for data in message["data"]]
        assert len(found) == count, f"{len(found)} changes arrived, not {count}"
        return found

    def receive_nothing(self, *, wait: float = 0.5) -> bool:
        """True when no message arrives within `wait` seconds."""
        self._fill(1, wait)
        return not self.pending

    def close(self) -> None:
        from django.db import connection

        self.executor.submit(lambda: connection.close()).result()
        self.executor.shutdown()


@pytest.fixture
def listen() -> Any:
    listeners: list[StreamListener] = []

    def make(tenant_id: int, table: str) -> StreamListener:
        listeners.append(StreamListener(tenant_id, table))
        return listeners[-1]

    yield make
    for listener in listeners:
        listener.close()


def current_database_url() -> str:
    """DATABASE_URL of the database the tests use now (the test database)."""
    from django.db import connection

    s = connection.settings_dict
    return f"postgres://{s['USER']}@{s['HOST']}:{s['PORT']}/{s['NAME']}"


@pytest.fixture
def subprocess_env(transactional_db: None) -> dict[str, str]:
    """Environment for a child process that must see this test's data."""
    import os

    return {**os.environ, "DATABASE_URL": current_database_url()}


@pytest.fixture(scope="session")
def server_env(django_db_setup: None) -> dict[str, str]:
    """Environment for Herald processes sharing the test database and Redis."""
    import os

    return {**os.environ, "DATABASE_URL": current_database_url()}


@pytest.fixture(scope="session")
def start_server(
    server_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Any:
    """Start more daphne processes (e.g. two sharing Redis); stopped at the end."""
    from tests.server import Server

    servers: list[Server] = []

    def start(**env: str) -> Server:
        log = tmp_path_factory.mktemp("server") / "server.log"
        servers.append(Server({**server_env, **env}, log=log))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def herald_server(start_server: Any) -> Any:
    """One real Herald server process (daphne) on PostgreSQL and Redis.

    Tests using it need `transactional_db` so their data is committed and the
    server sees it.
    """
    return start_server()


# The operator token of `operator_server` (its tenant API is on).
OPERATOR_TOKEN = "test-operator-" + "t0ken" * 8


@pytest.fixture(scope="session")
def operator_server(start_server: Any) -> Any:
    """A Herald server process with the tenant API on (HERALD_OPERATOR_TOKEN)."""
    return start_server(HERALD_OPERATOR_TOKEN=OPERATOR_TOKEN)


@pytest.fixture
def sockets(herald_server: Any) -> Any:
    """Open raw Phoenix sockets (tests.wire.Socket) to a server; closed after.

    `sockets(apikey, server=None, vsn="1.0.0")`: the session's server unless
    another is given.
    """
    from tests.wire import Socket

    opened: list[Socket] = []

    def open_socket(apikey: str, server: Any = None, *, vsn: str = "1.0.0") -> Socket:
        opened.append(Socket((server or herald_server).ws_url, apikey, vsn=vsn))
        return opened[-1]

    yield open_socket
    for socket in opened:
        socket.close()
