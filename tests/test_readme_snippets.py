"""The README's client snippets run as printed, on the Node and Python here.

Each snippet is taken from the README's "Listening" section, given the test
server's URL and a publishable key in place of `127.0.0.1:8000` and `pk_…`
(nothing else changes), and run with Debian's `node` (supabase-js from
tests/clients) and the Python client's venv. A change published for site 42
must then be printed by it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from realtime.services.tenants import TenantCredentials, row_policy_add
from tests.realtime_clients import CLIENT_PYTHON, CLIENTS
from tests.server import ROOT

pytestmark = pytest.mark.django_db(transaction=True)

README = ROOT / "README.md"
# Generous: a slow machine needs time to start node and the client.
DEADLINE = 60.0


def snippet(language: str) -> str:
    """The first `language` block of the README's "Listening" section."""
    text = README.read_text()
    section = text[text.index("## Listening") :]
    section = section[: section.index("\n## ", 1)]
    found = re.search(rf"```{language}\n(.*?)```", section, re.S)
    assert found, f"no {language} snippet in README's Listening section"
    return found.group(1)


def filled(code: str, *, server: Any, key: str) -> str:
    """The snippet with the test server and key: each placeholder once."""
    for placeholder in ("127.0.0.1:8000", "pk_…"):
        assert code.count(placeholder) == 1, (placeholder, code)
    port = server.url.rsplit(":", 1)[1]
    return code.replace("127.0.0.1:8000", f"127.0.0.1:{port}").replace("pk_…", key)


class Running:
    """A snippet's process; its output lines are collected as they come."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            argv,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(10)


def publish(server: Any, secret: str, slug: str) -> None:
    event = {
        "site_id": 42,
        "event_type": "content.published",
        "collection": "posts",
        "slug": slug,
        "item_id": 7,
    }
    response = httpx.post(
        f"{server.url}/api/live-updates",
        json=event,
        headers={"apikey": secret},
        timeout=10,
    )
    assert response.status_code == 201, response.text


def prints_a_change(running: Running, server: Any, tenant: TenantCredentials) -> str:
    """Publish for site 42 until the snippet prints one (it has no "subscribed"
    output to wait for); all it printed by then."""
    deadline = time.monotonic() + DEADLINE
    n = 0
    while time.monotonic() < deadline and running.process.poll() is None:
        n += 1
        publish(server, tenant.secret_key, f"printed-change-{n}")
        time.sleep(0.5)
        output = "".join(running.lines)
        if "printed-change-" in output:
            return output
    pytest.fail("the snippet printed no change:\n" + "".join(running.lines))


@pytest.fixture
def demo(tenant: TenantCredentials) -> TenantCredentials:
    """As `make run`'s demo tenant: anon may see every content event."""
    row_policy_add(tenant=tenant.tenant, table="live_updates", role="anon", rules=[])
    return tenant


@pytest.fixture
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as path:
        yield Path(path)


def test_the_node_snippet_runs_as_printed(herald_server: Any, demo: Any) -> None:
    code = filled(snippet("js"), server=herald_server, key=demo.publishable_key)
    # In tests/clients, where supabase-js and ws are installed (npm install).
    script = CLIENTS / f"listen-{time.monotonic_ns()}.mjs"
    script.write_text(code)
    running = Running([shutil.which("node") or "node", script.name], CLIENTS)
    try:
        output = prints_a_change(running, herald_server, demo)
    finally:
        running.stop()
        script.unlink()
    # console.log(change.eventType, change.new, change.old)
    assert "INSERT {" in output
    assert "site_id: 42" in output
    assert "event_type: 'content.published'" in output


def test_the_python_snippet_runs_as_printed(
    herald_server: Any, demo: Any, scratch: Path
) -> None:
    code = filled(snippet("python"), server=herald_server, key=demo.publishable_key)
    script = scratch / "listen.py"
    script.write_text(code)
    # The client's own venv (pip install realtime), run from a directory of its
    # own: Herald's `realtime` app must not shadow the PyPI client.
    running = Running([str(CLIENT_PYTHON), "-P", str(script)], scratch)
    try:
        output = prints_a_change(running, herald_server, demo)
    finally:
        running.stop()
    assert "{'id': " in output
    assert "'site_id': 42" in output
    assert "'event_type': 'content.published'" in output
