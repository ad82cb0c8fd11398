"""No client can hurt another: frames that used to kill a socket's handler, or
stall its process, against a real server.

Each test sends what a hostile client with the publishable key sent, then
checks what a user would notice: the frame is answered in the protocol's
shape, the socket (when it survives) and a bystander still get live changes,
and once the hostile sockets close, the tenant's places and subscription rows
are given back.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from websockets.exceptions import ConnectionClosed

from realtime.auth import token_mint
from realtime.channel_policy import glob_matches
from realtime.limits import connections_now
from realtime.models import RowPolicy
from realtime.services.changes import ChangeInput, live_updates_record
from realtime.services.tenants import TenantCredentials
from subscriptions.models import Subscription
from tests.wire import Socket

pytestmark = pytest.mark.django_db(transaction=True)

ORDERS = [{"event": "*", "schema": "public", "table": "orders"}]


def readable(creds: TenantCredentials, role: str = "anon") -> None:
    """Every row of `orders` visible to the role (none is, without a policy)."""
    RowPolicy.objects.create(tenant=creds.tenant, table="orders", role=role)


def limit(creds: TenantCredentials, **limits: Any) -> None:
    for name, value in limits.items():
        setattr(creds.tenant, name, value)
    creds.tenant.save()


def publish(creds: TenantCredentials, row_id: int, **extra: Any) -> int:
    change = ChangeInput(
        table="orders", type="INSERT", record={"id": row_id, "site_id": 1, **extra}
    )
    return live_updates_record(tenant=creds.tenant, changes=[change])[0].pk


def receives(socket: Socket, creds: TenantCredentials, row_id: int) -> None:
    """A change published now reaches the socket, and a heartbeat is answered."""
    seq = publish(creds, row_id)
    frame = socket.recv_until(
        lambda f: (
            f["event"] == "postgres_changes" and f["payload"]["data"]["seq"] == seq
        )
    )
    assert frame["payload"]["data"]["record"]["id"] == row_id
    ref = socket.push("phoenix", "heartbeat", {})
    assert socket.reply_to(ref)["payload"] == {"status": "ok", "response": {}}


def settled(check: Any, timeout: float = 10) -> None:
    """Wait until `check()` holds (the server releases after the close)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("never settled")
        time.sleep(0.05)


def connected(creds: TenantCredentials) -> int:
    return connections_now([creds.tenant.pk])[creds.tenant.pk]


def active_rows(creds: TenantCredentials) -> int:
    return Subscription.objects.filter(
        tenant=creds.tenant, state=Subscription.State.ACTIVE
    ).count()


@pytest.fixture
def bystanders(make_tenant: Any, sockets: Any) -> Any:
    """A joined socket of the tenant under attack and one of another tenant."""
    victim, other = make_tenant("Victim"), make_tenant("Other")
    for creds in (victim, other):
        readable(creds)
        readable(creds, "authenticated")
    near, far = sockets(victim.publishable_key), sockets(other.publishable_key)
    for socket in (near, far):
        assert socket.join("orders", bindings=ORDERS)["payload"]["status"] == "ok"
    return victim, other, near, far


def released_after(
    victim: TenantCredentials, hostile: list[Socket], *, connections: int, rows: int
) -> None:
    """Closing the hostile sockets gives back their places and rows."""
    for socket in hostile:
        socket.close()
    settled(lambda: connected(victim) == connections)
    settled(lambda: active_rows(victim) == rows)


@pytest.mark.parametrize(
    "table", ["a b", "tâble", "t" * 90, "orders\n", "a.b", 'x"; drop table y']
)
def test_a_table_no_change_can_come_from_is_refused_as_supabase_does(
    bystanders: Any, sockets: Any, table: str
) -> None:
    victim, other, near, far = bystanders
    ws = sockets(victim.publishable_key)
    binding = {"event": "*", "schema": "public", "table": table}
    reply = ws.join("odd", bindings=[binding, *ORDERS])
    assert reply["payload"]["status"] == "ok"
    system = ws.recv_until(lambda f: f["event"] == "system")
    assert system["payload"]["status"] == "error"
    assert system["payload"]["message"].startswith(
        "Unable to subscribe to changes with given parameters."
    )
    # The channel's valid binding still delivers; so do the bystanders.
    receives(ws, victim, 1)
    receives(near, victim, 2)
    receives(far, other, 3)
    released_after(victim, [ws], connections=1, rows=1)


@pytest.mark.parametrize("where", ["binding", "broadcast", "presence", "token"])
def test_values_nested_too_deep_are_refused_and_the_socket_lives(
    bystanders: Any, sockets: Any, where: str
) -> None:
    victim, other, _near, far = bystanders
    deep = "[" * 300 + "1" + "]" * 300  # as text: orjson will not write it
    ws = sockets(victim.publishable_key)
    ws.join("room", bindings=ORDERS)
    payloads = {
        "binding": ("phx_join", '{"config":{"postgres_changes":[{"x":%s}]}}'),
        "broadcast": ("broadcast", '{"type":"broadcast","event":"e","payload":%s}'),
        "presence": ("presence", '{"event":"track","payload":{"deep":%s}}'),
        "token": ("access_token", '{"access_token":%s}'),
    }
    event, payload = payloads[where]
    topic = "realtime:other" if where == "binding" else "realtime:room"
    ws.ws.send(
        f'{{"topic":"{topic}","event":"{event}","payload":{payload % deep},'
        f'"ref":"deep","join_ref":"{ws.join_ref}"}}'
    )
    assert ws.reply_to("deep")["payload"] == {
        "status": "error",
        "response": {"reason": "MalformedFrame: values nest at most 32 levels"},
    }
    receives(ws, victim, 1)
    receives(far, other, 2)
    released_after(victim, [ws], connections=1, rows=1)


def test_a_topic_with_nul_or_past_the_bound_is_refused(
    bystanders: Any, sockets: Any
) -> None:
    victim, _other, near, _far = bystanders
    ws = sockets(victim.publishable_key)
    for topic in ["a\x00b", "line\nbreak", "t" * 256]:
        reply = ws.join(topic)["payload"]
        assert reply["status"] == "error"
        assert reply["response"]["reason"].startswith("InvalidJoinPayload: a topic")
    assert ws.join("t" * 255)["payload"]["status"] == "ok"
    receives(near, victim, 1)
    released_after(victim, [ws], connections=1, rows=1)


def test_thousands_of_bindings_are_refused_before_any_work(
    bystanders: Any, sockets: Any
) -> None:
    victim, other, _near, far = bystanders
    ws = sockets(victim.publishable_key)
    many = [{"event": "*", "schema": "public", "table": f"t{i}"} for i in range(4000)]
    reply = ws.join("many", bindings=many)["payload"]
    assert reply == {
        "status": "error",
        "response": {
            "reason": "InvalidJoinPayload: a channel has at most 100 "
            "postgres_changes bindings"
        },
    }
    # A hundred on distinct tables is allowed, and nobody waits on it.
    assert ws.join("hundred", bindings=many[:100])["payload"]["status"] == "ok"
    receives(far, other, 1)
    released_after(victim, [ws], connections=1, rows=1)


def test_a_filter_number_past_what_python_converts_does_not_kill_the_socket(
    bystanders: Any, sockets: Any
) -> None:
    victim, _other, _near, _far = bystanders
    ws = sockets(victim.publishable_key)
    binding = {**ORDERS[0], "filter": "id=eq." + "9" * 5000}
    assert ws.join("huge", bindings=[binding, *ORDERS])["payload"]["status"] == "ok"
    receives(ws, victim, 1)
    too_long = {**ORDERS[0], "filter": "id=in.(" + ",".join(["1"] * 3000) + ")"}
    ws.join("long", bindings=[too_long])
    system = ws.recv_until(
        lambda f: f["event"] == "system" and f["topic"] == "realtime:long"
    )
    assert "a filter is at most 4096 characters" in system["payload"]["message"]
    released_after(victim, [ws], connections=1, rows=1)


@pytest.fixture
def doomed_topic() -> Iterator[str]:
    """A topic whose subscription row the database refuses (as a full disk or
    a constraint would): its join fails inside the handler, after the hub
    joined the channel's streams and topic."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            CREATE FUNCTION herald_test_refuse() RETURNS trigger AS $$
            BEGIN RAISE EXCEPTION 'refused by the test'; END $$ LANGUAGE plpgsql;
            CREATE TRIGGER herald_test_refuse BEFORE INSERT
            ON subscriptions_subscription FOR EACH ROW
            WHEN (NEW.topic = 'realtime:doomed') EXECUTE FUNCTION herald_test_refuse();
            """
        )
    yield "doomed"
    with connection.cursor() as cursor:
        cursor.execute(
            "DROP TRIGGER herald_test_refuse ON subscriptions_subscription;"
            "DROP FUNCTION herald_test_refuse();"
        )


def test_a_handler_that_fails_releases_what_it_held(
    bystanders: Any, sockets: Any, doomed_topic: str
) -> None:
    victim, _other, near, _far = bystanders
    limit(victim, max_concurrent_users=3)
    hostile = []
    for _ in range(5):  # more than the tenant's places, if any leaked
        ws = sockets(victim.publishable_key)
        reply = ws.join(doomed_topic, bindings=ORDERS)["payload"]
        assert reply == {
            "status": "error",
            "response": {"reason": "Unknown Error on Channel"},
        }
        # The socket lives on, and its channel is gone from the fan-out.
        assert ws.join("room", bindings=ORDERS)["payload"]["status"] == "ok"
        seq = publish(victim, 1)
        frame = ws.recv_until(lambda f: f["event"] == "postgres_changes")
        assert (frame["topic"], frame["payload"]["data"]["seq"]) == (
            "realtime:room",
            seq,
        )
        assert ws.quiet(lambda f: f["topic"] == "realtime:doomed")
        receives(near, victim, 1)
        ws.close()
        hostile.append(ws)
    released_after(victim, hostile, connections=1, rows=1)
    # The tenant's places all came back: two more sockets get in.
    for _ in range(2):
        assert sockets(victim.publishable_key).join("room")["payload"]["status"] == "ok"


def test_nul_in_a_token_claim_or_a_ref_is_stored_without_it(
    bystanders: Any, sockets: Any
) -> None:
    """PostgreSQL refuses NUL in text and jsonb: a client's NUL never fails a
    row (it failed the join's subscription row, killing the socket)."""
    victim = bystanders[0]
    token = token_mint(tenant=victim.tenant, role="anon", sub="a\x00b", ttl=300)
    ws = sockets(victim.publishable_key)
    ws.push(
        "realtime:room",
        "phx_join",
        {
            "config": {
                "postgres_changes": [{**ORDERS[0], "filter": "id=eq.\x00"}, *ORDERS]
            },
            "access_token": token,
        },
        join_ref="r\x00",
        ref="1",
    )
    assert ws.reply_to("1")["payload"]["status"] == "ok"
    row = Subscription.objects.get(tenant=victim.tenant, topic="realtime:room")
    assert (row.sub, row.join_ref) == ("a\ufffdb", "r\ufffd")
    assert row.bindings[0]["filter"] == "id=eq.\ufffd"
    receives(ws, victim, 1)


def test_the_user_of_a_join_token_counts_against_the_per_user_limit(
    tenant: TenantCredentials, sockets: Any
) -> None:
    """supabase-js connects with the publishable key and sends the user's
    token in each join: the socket is that user's from then on."""
    limit(tenant, max_connections_per_user=2)
    ann = token_mint(tenant=tenant.tenant, role="authenticated", sub="ann", ttl=300)
    bob = token_mint(tenant=tenant.tenant, role="authenticated", sub="bob", ttl=300)
    first, second, third = (sockets(tenant.publishable_key) for _ in range(3))
    for ws in (first, second):
        assert ws.join("room", token=ann)["payload"]["status"] == "ok"
    refused = third.join("room", token=ann)["payload"]
    assert refused == {
        "status": "error",
        "response": {
            "reason": "ConnectionRateLimitReached: Too many connections for this user"
        },
    }
    assert third.join("room", token=bob)["payload"]["status"] == "ok"
    # A refresh to another user moves the count: ann has a place again.
    second.push("realtime:room", "access_token", {"access_token": bob})
    settled(lambda: third.join("again", token=ann)["payload"]["status"] == "ok")


def test_heartbeats_count_toward_messages_per_second(
    tenant: TenantCredentials, sockets: Any
) -> None:
    limit(tenant, max_events_per_second=10)
    calm = sockets(tenant.publishable_key)
    calm.join("room")
    # The limit and a heartbeat in one second: all answered.
    refs = [calm.push("phoenix", "heartbeat", {}) for _ in range(11)]
    assert all(calm.reply_to(r)["payload"]["status"] == "ok" for r in refs[:10])
    flood = sockets(tenant.publishable_key)
    with pytest.raises(ConnectionClosed) as closed:
        for _ in range(2000):
            flood.push("phoenix", "heartbeat", {})
        while True:
            flood.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4029


def test_a_subscription_row_keeps_a_summary_of_the_bindings(
    tenant: TenantCredentials, sockets: Any
) -> None:
    ws = sockets(tenant.publishable_key)
    junk = {**ORDERS[0], "filter": "id=eq.1", "junk": "x" * 100_000}
    assert ws.join("room", bindings=[junk])["payload"]["status"] == "ok"
    row = Subscription.objects.get(tenant=tenant.tenant, topic="realtime:room")
    assert row.bindings == [
        {
            "id": row.bindings[0]["id"],
            "event": "*",
            "schema": "public",
            "table": "orders",
            "filter": "id=eq.1",
        }
    ]


def test_wildcard_topics_match_in_linear_time_as_a_regex_would() -> None:
    cases = [
        (["site:", ""], "site:42", True),
        (["a", "b", "c"], "axxbyyc", True),
        (["a", "b", "c"], "acb", False),
        (["", "", ""], "", True),
        (["ab", "ba"], "aba", False),
        (["x"], "x", True),
    ]
    for pieces, text, expected in cases:
        regex = ".*".join(map(re.escape, pieces))
        assert bool(re.fullmatch(regex, text, re.DOTALL)) is expected
        assert glob_matches(pieces, text) is expected
    # The shape that took seconds with `.*` runs over a 96 KB topic.
    assert glob_matches(["", "a", "a", "b"], "a" * 96_000) is False
