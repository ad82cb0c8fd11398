"""Captured writes as the official clients see them, live and through catch-up.

Every write path Django users and other programs have (save, update(),
bulk_create(), bulk_update(), raw SQL, psql from another process,
QuerySet.delete()) on the suite's tracked model, against a real server on
PostgreSQL; a writer killed right after its commit; broadcasts sent from the
database. The SQLite default is covered in tests/test_embedded_capture.py.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from django.db import transaction

from realtime.auth import token_mint
from realtime.services.policies import channel_policy_add
from realtime.services.tenants import TenantCredentials, row_policy_add
from tests.capture_writes import EVERY_WRITE_PATH, every_write_path, psql
from tests.realtime_clients import ClientFactory, ClientProcess, client_factory
from tests.server import ROOT
from tests.tracked.models import Article

pytestmark = pytest.mark.django_db(transaction=True)

ARTICLES = [{"event": "*", "schema": "public", "table": "articles"}]
TIMEOUT = 30.0


@pytest.fixture
def clients() -> Iterator[ClientFactory]:
    with client_factory() as open_client:
        yield open_client


def as_seen(event: dict[str, Any]) -> tuple[str, dict, dict]:
    """(type, new, old) as the client's postgres_changes callback got them."""
    payload = event["payload"]
    if "data" in payload:  # Python: the raw payload
        data = payload["data"]
        return data["type"], data.get("record") or {}, data.get("old_record") or {}
    return payload["eventType"], payload["new"] or {}, payload["old"] or {}


def changes(client: ClientProcess, count: int) -> list[tuple[str, dict, dict]]:
    seen: list[dict] = []

    def enough(event: dict) -> bool:  # each event is looked at once
        if event["event"] == "postgres_changes":
            seen.append(event)
        return len(seen) >= count

    client.wait_for(enough, TIMEOUT)
    return [as_seen(e) for e in seen]


def titles(seen: list[tuple[str, dict, dict]]) -> list[tuple[str, str]]:
    return [(kind, (new or old)["title"]) for kind, new, old in seen]


@pytest.mark.parametrize("kind", ["python", "realtime-js-v2", "supabase-js"])
def test_every_write_path_reaches_a_client_once_live_and_in_catch_up(
    kind: str, clients: ClientFactory, herald_server: Any, tenant: TenantCredentials
) -> None:
    row_policy_add(tenant=tenant.tenant, table="articles", role="anon", rules=[])
    client = clients(kind, herald_server, apikey=tenant.publishable_key)
    client.subscribe("site", ARTICLES)

    with pytest.raises(RuntimeError), transaction.atomic():
        Article.objects.create(tenant=tenant.tenant, site_id=1, title="rolled back")
        raise RuntimeError
    every_write_path(tenant.tenant)

    expected = EVERY_WRITE_PATH
    live = changes(client, len(expected))
    assert titles(live) == expected
    assert live[1][2]["title"] == "saved", "update()'s old row"
    assert (live[4][1]["site_id"], live[4][2]["site_id"]) == (2, 1), "raw SQL"
    assert live[5][1]["published"] is True, "psql"
    client.assert_no(lambda e: False, wait=1.0)  # then nothing more came:
    assert len(client.matching(lambda e: e["event"] == "postgres_changes")) == 8
    caught = httpx.get(
        f"{herald_server.url}/api/live-updates",
        params={"since": 0, "table": "articles"},
        headers={"apikey": tenant.secret_key},
        timeout=10,
    ).json()["changes"]
    assert [
        (c["type"], (c.get("record") or c.get("old_record"))["title"]) for c in caught
    ] == expected


def test_a_writer_killed_right_after_its_commit_still_reaches_clients(
    clients: ClientFactory,
    herald_server: Any,
    tenant: TenantCredentials,
    subprocess_env: dict[str, str],
) -> None:
    """The writer dies in the first on-commit hook, before it could hint anyone."""
    client = clients("supabase-js", herald_server, apikey=tenant.secret_key)
    client.subscribe("site", ARTICLES)
    script = textwrap.dedent(
        f"""
        import os, signal
        import django
        django.setup()
        from django.db import transaction
        from realtime.models import Tenant
        from tests.tracked.models import Article
        tenant = Tenant.objects.get(pk={tenant.tenant.pk})
        with transaction.atomic():
            transaction.on_commit(lambda: os.kill(os.getpid(), signal.SIGKILL))
            Article.objects.create(tenant=tenant, site_id=1, title="last words")
        """
    )
    died = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**subprocess_env, "DJANGO_SETTINGS_MODULE": "config.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert died.returncode == -signal.SIGKILL, died.stderr
    [(kind, new, _)] = changes(client, 1)
    assert (kind, new["title"]) == ("INSERT", "last words")


@pytest.mark.parametrize("kind", ["python", "realtime-js-v2"])
def test_broadcasts_from_the_database_reach_clients_on_commit_as_policies_allow(
    kind: str, clients: ClientFactory, herald_server: Any, tenant: TenantCredentials
) -> None:
    channel_policy_add(
        tenant=tenant.tenant, pattern="reading_progress:{sub}", role="authenticated"
    )
    token = token_mint(tenant=tenant.tenant, role="authenticated", sub="7", ttl=600)
    client = clients(kind, herald_server, apikey=tenant.publishable_key, token=token)
    private = {"private": True}
    for topic, config in (("lobby", None), ("reading_progress:7", private)):
        client.send("on_broadcast", topic=topic, event="*", config=config)
        client.subscribe(topic, [], config=config)
    slug = tenant.tenant.slug
    psql(
        "BEGIN",
        f"SELECT herald_send('{slug}', 'lobby', 'note', '{{\"n\": 0}}', false)",
        "ROLLBACK",
    )
    psql(
        f"SELECT herald_send('{slug}', 'reading_progress:8', 'progress', "
        "'{\"page\": 1}', true)",
        f"SELECT herald_send('{slug}', 'reading_progress:7', 'progress', "
        "'{\"page\": 42}', true)",
        f"INSERT INTO herald_messages (tenant_slug, topic, event, payload, private) "
        f"VALUES ('{slug}', 'lobby', 'note', '{{\"n\": 1}}', false)",
    )
    got = client.wait_for(
        lambda e: e["event"] == "broadcast" and e["topic"] == "lobby", TIMEOUT
    )
    assert got["payload"]["payload"] == {"n": 1}, "the rolled-back one never came"
    mine = client.wait_for(
        lambda e: e["event"] == "broadcast" and e["topic"] == "reading_progress:7",
        TIMEOUT,
    )
    assert mine["payload"]["payload"] == {"page": 42}
    client.assert_no(lambda e: False, wait=1.0)  # then nothing more came:
    assert sorted(
        (e["topic"], e["payload"]["payload"].get("page", 0))
        for e in client.matching(lambda e: e["event"] == "broadcast")
    ) == [("lobby", 0), ("reading_progress:7", 42)]
