"""Column `select` in a postgres_changes binding: only the chosen columns arrive.

Real clients (tests/realtime_clients.py) and raw sockets (tests/wire.py)
against the session's server; changes are published over REST. The filter and
the row policy see the whole row; `select` only cuts what is sent, and `id`
(Herald's primary key) always comes along, as Supabase sends the primary key.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from realtime.auth import token_mint
from realtime.services.tenants import TenantCredentials, row_policy_add
from tests.realtime_clients import ClientFactory, client_factory

pytestmark = pytest.mark.django_db(transaction=True)

KINDS = ["python", "realtime-js-v2", "supabase-js"]
TABLE = "orders"
SELECT = ["status"]


@pytest.fixture
def clients() -> Iterator[ClientFactory]:
    with client_factory() as open_client:
        yield open_client


def publish(server: Any, key: str, **change: Any) -> dict[str, Any]:
    response = httpx.post(
        f"{server.url}/api/changes", json=change, headers={"apikey": key}, timeout=10
    )
    assert response.status_code == 201, response.text
    return response.json()["changes"][0]


def binding(**extra: Any) -> dict[str, Any]:
    return {"event": "*", "schema": "public", "table": TABLE, **extra}


def rows_of(event: dict[str, Any]) -> tuple[dict, dict]:
    """(new, old) as the client's callback got them."""
    payload = event["payload"]
    if "data" in payload:  # Python: the raw payload
        data = payload["data"]
        return data.get("record") or {}, data.get("old_record") or {}
    return payload["new"], payload["old"]


def is_change(event: dict[str, Any]) -> bool:
    return event["event"] == "postgres_changes"


@pytest.mark.parametrize("kind", KINDS)
def test_only_the_selected_columns_arrive(
    kind: str, clients: ClientFactory, herald_server: Any, tenant: TenantCredentials
) -> None:
    row_policy_add(tenant=tenant.tenant, table=TABLE, role="anon", rules=[])
    client = clients(kind, herald_server, apikey=tenant.publishable_key)
    # The filter is on a column the selection leaves out: it sees the whole row.
    client.subscribe("orders", [binding(filter="site_id=eq.1", select=SELECT)])
    secret = tenant.secret_key
    row = {"id": 1, "site_id": 1, "status": "new", "card": "4111-1111"}

    publish(
        herald_server,
        secret,
        table=TABLE,
        type="INSERT",
        record={**row, "id": 9, "site_id": 2},
    )
    publish(herald_server, secret, table=TABLE, type="INSERT", record=row)
    paid = {**row, "status": "paid"}
    publish(
        herald_server, secret, table=TABLE, type="UPDATE", record=paid, old_record=row
    )
    publish(herald_server, secret, table=TABLE, type="DELETE", old_record=paid)

    client.wait_for(lambda e: is_change(e) and rows_of(e)[0] == {} and rows_of(e)[1])
    changes = client.matching(is_change)
    assert [rows_of(e) for e in changes] == [
        ({"id": 1, "status": "new"}, {}),
        ({"id": 1, "status": "paid"}, {"id": 1, "status": "new"}),
        ({}, {"id": 1, "status": "paid"}),
    ]
    if kind == "python":
        columns = [c["name"] for c in changes[0]["payload"]["data"]["columns"]]
        assert sorted(columns) == ["id", "status"]
    client.assert_no(lambda e: e["event"] in {"exception", "error"})


@pytest.mark.parametrize("kind", ["python", "supabase-js"])
def test_select_never_leaks_what_the_row_policy_hides(
    kind: str, clients: ClientFactory, herald_server: Any, tenant: TenantCredentials
) -> None:
    row_policy_add(
        tenant=tenant.tenant,
        table=TABLE,
        role="authenticated",
        rules=[{"column": "site_id", "claim": "site_id"}],
    )
    token = token_mint(
        tenant=tenant.tenant,
        role="authenticated",
        sub="u-42",
        claims={"site_id": 42},
        ttl=600,
    )
    client = clients(kind, herald_server, apikey=tenant.publishable_key, token=token)
    # Selecting the secret column asks for it; the policy still decides.
    client.subscribe("orders", [binding(select=["status", "card", "site_id"])])
    secret = tenant.secret_key
    other = {"id": 5, "site_id": 99, "status": "new", "card": "other-site-card"}
    publish(herald_server, secret, table=TABLE, type="INSERT", record=other)
    moved = {**other, "site_id": 42, "card": "now-ours"}
    publish(
        herald_server,
        secret,
        table=TABLE,
        type="UPDATE",
        record=moved,
        old_record=other,
    )

    update = client.change(lambda e: rows_of(e)[0].get("card") == "now-ours")
    new, old = rows_of(update)
    assert new == {"id": 5, "site_id": 42, "status": "new", "card": "now-ours"}
    # The old row was site 99's: cut to its id, selection or not.
    assert old == {"id": 5}
    assert len(client.matching(is_change)) == 1  # site 99's INSERT never came
    assert "other-site-card" not in str(client.events)


def test_two_sockets_with_different_selects_each_get_their_shape(
    clients: ClientFactory, herald_server: Any, tenant: TenantCredentials
) -> None:
    row_policy_add(tenant=tenant.tenant, table=TABLE, role="anon", rules=[])
    narrow = clients("supabase-js", herald_server, apikey=tenant.publishable_key)
    wide = clients("python", herald_server, apikey=tenant.publishable_key)
    whole = clients("realtime-js-v2", herald_server, apikey=tenant.publishable_key)
    # Same topic and filter: only `select` tells these audiences apart.
    narrow.subscribe("orders", [binding(select=["status"])])
    wide.subscribe("orders", [binding(select=["status", "card"])])
    whole.subscribe("orders", [binding()])
    row = {"id": 3, "site_id": 1, "status": "new", "card": "c-3"}
    publish(herald_server, tenant.secret_key, table=TABLE, type="INSERT", record=row)

    assert rows_of(narrow.change(lambda e: True))[0] == {"id": 3, "status": "new"}
    got = rows_of(wide.change(lambda e: True))[0]
    assert got == {"id": 3, "status": "new", "card": "c-3"}
    assert rows_of(whole.change(lambda e: True))[0] == row


def test_one_channel_two_selects_one_frame_each(
    sockets: Any, tenant: TenantCredentials, herald_server: Any
) -> None:
    """Two bindings of one channel matching one change: each gets a frame
    shaped to its own select, with its own id (realtime-js routes by ids)."""
    row_policy_add(tenant=tenant.tenant, table=TABLE, role="anon", rules=[])
    socket = sockets(tenant.publishable_key)
    reply = socket.join(
        "orders",
        bindings=[binding(event="INSERT", select=["status"]), binding(event="INSERT")],
    )
    narrow_id, whole_id = [
        b["id"] for b in reply["payload"]["response"]["postgres_changes"]
    ]
    row = {"id": 4, "status": "new", "card": "c-4"}
    publish(herald_server, tenant.secret_key, table=TABLE, type="INSERT", record=row)
    frames = {
        tuple(f["payload"]["ids"]): f["payload"]["data"] for f in socket.changes(2)
    }
    assert frames[(narrow_id,)]["record"] == {"id": 4, "status": "new"}
    assert [c["name"] for c in frames[(narrow_id,)]["columns"]] == ["id", "status"]
    assert frames[(whole_id,)]["record"] == row


REFUSED = [
    (
        "a string",
        binding(select="status,card"),
        "Error parsing `select` params: expected a list of column name strings, "
        'e.g. select: ["col1", "col2"]',
    ),
    (
        "a wildcard table",
        {"event": "*", "schema": "public", "table": "*", "select": ["status"]},
        "Column selection is not supported for wildcard subscriptions. Provide an "
        "explicit schema and table name.",
    ),
    (
        "a schema alone",
        {"event": "*", "schema": "public", "select": ["status"]},
        "Column selection is not supported for wildcard subscriptions. Provide an "
        "explicit schema and table name.",
    ),
    (
        "a name no column has",
        binding(filter="site_id=eq.1", select=["status", "card; drop"]),
        "Unable to subscribe to changes with given parameters. An exception happened "
        "so please check your connect parameters: [event: *, schema: public, table: "
        'orders, filters: [{"site_id", "eq", "1", false}], select: ["status", '
        '"card; drop"]]. Exception: ERROR P0001 (raise_exception) invalid column '
        "for select card; drop",
    ),
    (
        "too many names",
        binding(select=[f"c{i}" for i in range(101)]),
        "Error parsing `select` params: a select names at most 100 columns",
    ),
]


@pytest.mark.parametrize(
    ("case", "params", "message"), REFUSED, ids=[r[0] for r in REFUSED]
)
def test_a_bad_select_is_refused_with_supabases_system_error(
    case: str,
    params: dict[str, Any],
    message: str,
    sockets: Any,
    tenant: TenantCredentials,
    herald_server: Any,
) -> None:
    row_policy_add(tenant=tenant.tenant, table=TABLE, role="anon", rules=[])
    socket = sockets(tenant.publishable_key)
    reply = socket.join("orders", bindings=[params])
    # As Supabase: the join succeeds, the binding is echoed, a system error says why.
    assert reply["payload"]["status"] == "ok"
    echoed = reply["payload"]["response"]["postgres_changes"]
    assert [{k: v for k, v in b.items() if k != "id"} for b in echoed] == [params]
    system = socket.recv_until(lambda f: f["event"] == "system")
    assert system["payload"] == {
        "extension": "postgres_changes",
        "status": "error",
        "message": message,
        "channel": "orders",
    }
    publish(
        herald_server,
        tenant.secret_key,
        table=TABLE,
        type="INSERT",
        record={"id": 1, "status": "new"},
    )
    assert socket.quiet(lambda f: f["event"] == "postgres_changes")


def test_select_of_no_strings_means_every_column(
    sockets: Any, tenant: TenantCredentials, herald_server: Any
) -> None:
    """Supabase drops entries that are not strings; none left is no selection."""
    row_policy_add(tenant=tenant.tenant, table=TABLE, role="anon", rules=[])
    socket = sockets(tenant.publishable_key)
    socket.join("orders", bindings=[binding(select=[1, None])])
    row = {"id": 6, "status": "new", "card": "c-6"}
    publish(herald_server, tenant.secret_key, table=TABLE, type="INSERT", record=row)
    assert socket.changes(1)[0]["payload"]["data"]["record"] == row


def test_catch_up_with_a_selecting_binding_is_cut_the_same_way(
    tenant: TenantCredentials,
) -> None:
    """changes_after (catch-up, polling, webhooks) shapes as the sockets do."""
    from realtime.bindings import parse_bindings
    from realtime.change_log import Reader, changes_after
    from realtime.services.changes import ChangeInput, live_updates_record

    row_policy_add(
        tenant=tenant.tenant,
        table=TABLE,
        role="authenticated",
        rules=[{"column": "site_id", "claim": "site_id"}],
    )
    other = {"id": 5, "site_id": 99, "status": "new", "card": "theirs"}
    moved = {**other, "site_id": 42, "card": "ours"}
    live_updates_record(
        tenant=tenant.tenant,
        changes=[
            ChangeInput(table=TABLE, type="INSERT", record=other),
            ChangeInput(table=TABLE, type="UPDATE", record=moved, old_record=other),
        ],
    )
    [selecting], _ = parse_bindings([binding(select=["card"])])
    reader = Reader(
        tenant_id=tenant.tenant.pk, role="authenticated", claims={"site_id": 42}
    )
    page = changes_after(reader=reader, after=0, limit=10, binding=selecting)
    assert [(c.record, c.old_record) for c in page.changes] == [
        ({"id": 5, "card": "ours"}, {"id": 5})
    ]
    assert sorted(c["name"] for c in page.changes[0].columns) == ["card", "id"]


def test_each_distinct_shape_is_encoded_once(tenant: TenantCredentials) -> None:
    """Sixty channels in three selection classes on one topic: three frames
    are encoded for a change, each shared by its class (fastsend's Frame)."""
    import asyncio

    import orjson

    from realtime.auth import Principal
    from realtime.bindings import parse_bindings
    from realtime.fastsend import Outbox
    from realtime.hub import Hub, Member
    from realtime.layer import stream_group
    from realtime.protocol import V1

    selections = [None, ["status"], ["status", "card"]]
    members = []
    for n in range(60):
        select = selections[n % 3]
        params = binding() if select is None else binding(select=select)
        bindings, _ = parse_bindings([params])
        members.append(
            Member(
                send=None,  # type: ignore[arg-type]
                codec=V1,
                topic="realtime:orders",
                bindings=tuple(bindings),
                principal=Principal(
                    tenant=tenant.tenant, role="service_role", claims={"sub": f"u{n}"}
                ),
            )
        )
    change = {
        "schema": "public",
        "table": TABLE,
        "commit_timestamp": "2026-12-02T12:00:00.000Z",
        "type": "INSERT",
        "columns": [{"name": c, "type": "text"} for c in ("id", "status", "card")],
        "errors": None,
        "seq": 1,
        "record": {"id": 1, "status": "new", "card": "c-1"},
    }

    async def fan_out() -> list[tuple[Member, Any]]:
        hub = Hub()
        try:
            for member in members:
                await hub.add(member)
            outbox = Outbox()
            message = {
                "type": "stream.changes",
                "stream": stream_group(tenant.tenant.pk, TABLE),
                "tenant": tenant.tenant.pk,
                "seqs": [1],
                "data": [orjson.dumps(change)],
            }
            await hub.dispatch_changes(message, outbox)
            return [(m, frames) for m, frames in outbox.flush()]
        finally:
            for task in hub._tasks:
                task.cancel()

    sent = asyncio.run(fan_out())
    assert len(sent) == 60
    frames = {id(frames[0]): frames[0] for _, frames in sent}
    assert len(frames) == 3
    records = sorted(
        sorted(orjson.loads(f.text)["payload"]["data"]["record"])
        for f in frames.values()
    )
    assert records == [
        ["card", "id", "status"],
        ["card", "id", "status"],
        ["id", "status"],
    ]
    for member, [frame] in sent:
        select = member.bindings[0].select
        expected = {"id", "status", "card"} if select is None else select | {"id"}
        assert set(orjson.loads(frame.text)["payload"]["data"]["record"]) == expected


@pytest.mark.parametrize("kind", ["supabase-js", "python"])
def test_a_tracked_tables_columns_are_checked_as_supabase_checks_them(
    kind: str, clients: ClientFactory, herald_server: Any, tenant: TenantCredentials
) -> None:
    """A tracked table has a schema: a name it has no column of is refused."""
    from tests.tracked.models import Article

    row_policy_add(tenant=tenant.tenant, table="articles", role="anon", rules=[])
    client = clients(kind, herald_server, apikey=tenant.publishable_key)
    articles = {"event": "INSERT", "schema": "public", "table": "articles"}
    typo = {**articles, "select": ["title", "titel"]}
    since = client.mark()
    # As from Supabase: the join is answered ok, then a system error says why
    # (supabase-js hands it to on('system'), Python reports a channel error).
    client.subscribe("typo", [typo])
    told = client.wait_for(
        lambda e: (
            e.get("topic") == "typo"
            and e["event"] in {"system", "status"}
            and "invalid column for select titel" in str(e)
        ),
        since=since,
    )
    assert "[event: INSERT, schema: public, table: articles" in str(told)
    client.subscribe("fine", [{**articles, "select": ["title", "price"]}])
    Article.objects.create(tenant=tenant.tenant, site_id=1, title="Hello")
    new, _ = rows_of(client.change(lambda e: e["topic"] == "fine"))
    assert set(new) == {"id", "title", "price"}
    assert new["title"] == "Hello"
    client.assert_no(lambda e: is_change(e) and e["topic"] == "typo")


def test_tracked_columns_leave_out_the_excluded_ones(tenant: TenantCredentials) -> None:
    from realtime.models import TrackedTable
    from realtime.selectors import tracked_columns

    articles = TrackedTable.objects.get(table="articles")
    whole = tracked_columns(tables=["articles", TABLE])
    assert whole[TABLE] is None  # published over REST: no schema known
    assert whole["articles"] is not None
    assert {"id", "title", "price", "site_id"} <= whole["articles"]
    articles.exclude = ["price"]
    articles.save(update_fields=["exclude"])
    assert tracked_columns(tables=["articles"])["articles"] == whole["articles"] - {
        "price"
    }
