"""The official Supabase Realtime clients as processes a test can drive.

Each client runs in a driver process (tests/clients/driver.mjs or driver.py)
that reads JSON-line commands and writes JSON-line events; see driver.mjs for
the vocabulary. `make clients` installs them (npm ci, tests/clients/.venv).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import pytest

from tests.server import ROOT

CLIENTS = ROOT / "tests" / "clients"
CLIENT_PYTHON = CLIENTS / ".venv" / "bin" / "python"

# Test names for the clients, and how each is started: (client, vsn).
KINDS: dict[str, tuple[str, str | None]] = {
    "python": ("python", None),
    "realtime-js": ("realtime-js", None),
    "realtime-js-v2": ("realtime-js", "2.0.0"),
    "realtime-js-v1": ("realtime-js", "1.0.0"),
    "supabase-js": ("supabase-js", None),
}

TIMEOUT = 10.0

Event = dict[str, Any]
Predicate = Callable[[Event], bool]


class HasUrl(Protocol):
    url: str


def _command(
    kind: str, url: str, apikey: str, token: str | None, vsn: str | None
) -> list[str]:
    client, default_vsn = KINDS[kind]
    vsn = vsn or default_vsn
    if client == "python":
        # -P and cwd in tests/clients: `import realtime` must find the PyPI
        # client, not Herald's app of the same name at the repository root.
        argv = [str(CLIENT_PYTHON), "-P", "driver.py"]
    else:
        argv = [shutil.which("node") or "node", "driver.mjs", "--client", client]
        if vsn:
            argv += ["--vsn", vsn]
    argv += ["--url", url, "--apikey", apikey]
    return argv + (["--token", token] if token else [])


def _missing_clients() -> str | None:
    if not (CLIENTS / "node_modules" / "@supabase" / "supabase-js").is_dir():
        return "tests/clients/node_modules is missing: run `make clients`"
    if not CLIENT_PYTHON.exists():
        return "tests/clients/.venv is missing: run `make clients`"
    return None


class ClientProcess:
    """One driver process; its events are collected by a reader thread."""

    def __init__(self, kind: str, argv: list[str]) -> None:
        self.kind = kind
        self.events: list[Event] = []
        self._stderr: deque[str] = deque(maxlen=200)
        self._changed = threading.Condition()
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"PYTHONPATH", "DJANGO_SETTINGS_MODULE", "NODE_OPTIONS"}
        }
        self.process = subprocess.Popen(
            argv,
            cwd=CLIENTS,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self._readers = [
            threading.Thread(target=self._read_events, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        self.wait_for(lambda e: e["event"] == "ready", timeout=30)

    def _read_events(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "stdout", "line": line.rstrip("\n")}
            with self._changed:
                self.events.append(event)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._stderr.append(line.rstrip("\n"))

    # --- Driving -------------------------------------------------------------

    def send(self, cmd: str, **fields: Any) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps({"cmd": cmd, **fields}) + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError):
            pytest.fail(f"{self.kind} client is gone\n{self.describe()}")

    def mark(self) -> int:
        """The position of the next event: pass it as `since` to wait past it."""
        with self._changed:
            return len(self.events)

    def wait_for(
        self, predicate: Predicate, timeout: float = TIMEOUT, *, since: int = 0
    ) -> Event:
        """The first event from `since` on matching `predicate`; fails after timeout."""
        deadline = time.monotonic() + timeout
        checked = since
        with self._changed:
            while True:
                for event in self.events[checked:]:
                    if predicate(event):
                        return event
                checked = max(checked, len(self.events))
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (
                    self.process.poll() is not None and not self._reading()
                ):
                    break
                self._changed.wait(min(remaining, 0.5))
        pytest.fail(
            f"{self.kind} client: no matching event within {timeout}s\n"
            + self.describe()
        )

    def _reading(self) -> bool:
        return self._readers[0].is_alive()

    def assert_no(
        self, predicate: Predicate, wait: float = 0.0, *, since: int = 0
    ) -> None:
        """No event from `since` on matches, now or within `wait` seconds."""
        deadline = time.monotonic() + wait
        with self._changed:
            while True:
                found = [e for e in self.events[since:] if predicate(e)]
                if found:
                    pytest.fail(
                        f"{self.kind} client got an unexpected event: {found[0]}\n"
                        + self.describe()
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._changed.wait(remaining)

    def matching(self, predicate: Predicate, *, since: int = 0) -> list[Event]:
        with self._changed:
            return [e for e in self.events[since:] if predicate(e)]

    # --- Convenience for the common commands ----------------------------------

    def subscribe(
        self,
        topic: str,
        postgres_changes: list[dict[str, Any]],
        *,
        config: dict[str, Any] | None = None,
        expect: str = "SUBSCRIBED",
        timeout: float = TIMEOUT,
    ) -> Event:
        """Join `topic` with these bindings and wait for the status `expect`."""
        since = self.mark()
        fields: dict[str, Any] = {"topic": topic, "postgres_changes": postgres_changes}
        if config is not None:
            fields["config"] = config
        self.send("subscribe", **fields)
        status = self.wait_for(
            lambda e: e["event"] == "status" and e["topic"] == topic,
            timeout,
            since=since,
        )
        if status["status"] != expect:
            pytest.fail(
                f"{self.kind} client: {topic} is {status['status']}"
                f" ({status['error']}), expected {expect}\n{self.describe()}"
            )
        return status

    def change(
        self, predicate: Predicate, timeout: float = TIMEOUT, *, since: int = 0
    ) -> Event:
        """The next postgres_changes callback whose event satisfies `predicate`."""
        return self.wait_for(
            lambda e: e["event"] == "postgres_changes" and predicate(e),
            timeout,
            since=since,
        )

    # --- Diagnosis and shutdown ------------------------------------------------

    def describe(self, last: int = 40) -> str:
        with self._changed:
            events = self.events[-last:]
        lines = [f"argv: {' '.join(self.process.args)}"]  # type: ignore[arg-type]
        lines.append(f"exit code: {self.process.poll()}")
        lines.append(f"last {len(events)} events:")
        lines += [f"  {json.dumps(e, default=str)[:600]}" for e in events]
        lines.append("stderr:")
        lines += [f"  {line}" for line in list(self._stderr)[-40:]]
        return "\n".join(lines)

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(BrokenPipeError, OSError, ValueError):
                self.send("close")
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        for reader in self._readers:
            reader.join(5)


class ClientFactory(Protocol):
    def __call__(
        self,
        kind: str,
        server: HasUrl,
        *,
        apikey: str,
        token: str | None = None,
        vsn: str | None = None,
    ) -> ClientProcess: ...


@contextlib.contextmanager
def client_factory() -> Iterator[ClientFactory]:
    """Open clients with `open(kind, server, apikey=..., token=...)`; all closed after.

    `kind` is a key of KINDS: python, realtime-js(-v1|-v2), supabase-js. `token`
    is set before any join (setAuth, supabase-js's accessToken, Python's
    set_auth); `vsn` overrides the serializer realtime-js asks for.
    """
    missing = _missing_clients()
    if missing:
        pytest.fail(missing)
    opened: list[ClientProcess] = []

    def open_client(
        kind: str,
        server: HasUrl,
        *,
        apikey: str,
        token: str | None = None,
        vsn: str | None = None,
    ) -> ClientProcess:
        argv = _command(kind, server.url, apikey, token, vsn)
        opened.append(ClientProcess(kind, argv))
        return opened[-1]

    try:
        yield open_client
    finally:
        for client in opened:
            client.close()
