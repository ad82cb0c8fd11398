"""The authorization callback against a real HTTP server on loopback.

Herald runs as another process (tests.server) and asks the shop's endpoint
(tests.callbacks.CallbackServer, which checks the signature with the README's
verifier); sockets are raw websockets sending a browser's Cookie header.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.management import call_command

from audit.models import ActivityLog, EventType
from realtime.auth_callback import signature
from realtime.models import AuthCallback
from realtime.services.auth_callbacks import auth_callback_set
from realtime.services.changes import ChangeInput, live_updates_record
from realtime.services.tenants import TenantCredentials
from tests.callbacks import CallbackServer, allow, deny, readme_verifier
from tests.realtime.test_socket_clients import change_row
from tests.realtime_clients import ClientFactory, client_factory
from tests.wire import Socket

pytestmark = pytest.mark.django_db(transaction=True)

ORDERS = [{"event": "*", "schema": "public", "table": "orders"}]
SESSION = {"Cookie": "sessionid=abc123; csrftoken=zz"}
MEMBER = allow(sub="u1", role="authenticated", claims={"site_ids": [1, 2]}, ttl=300)


@pytest.fixture
def shop() -> Iterator[CallbackServer]:
    server = CallbackServer()
    yield server
    server.stop()


@pytest.fixture
def clients() -> Iterator[ClientFactory]:
    with client_factory() as open_client:
        yield open_client


@pytest.fixture
def browser(herald_server: Any) -> Iterator[Callable[..., Socket]]:
    """Raw sockets with the publishable key and, by default, a session cookie."""
    opened: list[Socket] = []

    def open_socket(
        creds: TenantCredentials, headers: dict[str, str] | None = None, **kw: Any
    ) -> Socket:
        socket = Socket(
            herald_server.ws_url,
            creds.publishable_key,
            headers=SESSION if headers is None else headers,
            **kw,
        )
        opened.append(socket)
        return socket

    yield open_socket
    for socket in opened:
        socket.close()


def configure(
    creds: TenantCredentials, shop: CallbackServer, **options: Any
) -> AuthCallback:
    callback, secret = auth_callback_set(tenant=creds.tenant, url=shop.url, **options)
    assert secret is not None
    shop.secret = secret
    call_command(
        "add_row_policy",
        "--tenant",
        creds.tenant.slug,
        "--table",
        "orders",
        "--role",
        "authenticated",
        "--match-any",
        "site_id=site_ids",
    )
    return callback


def publish(creds: TenantCredentials, *site_ids: int) -> None:
    changes = [
        ChangeInput(table="orders", type="INSERT", record={"id": n, "site_id": site})
        for n, site in enumerate(site_ids, 1)
    ]
    live_updates_record(tenant=creds.tenant, changes=changes)


def visit(browser: Callable[..., Socket], creds: TenantCredentials, **kw: Any) -> None:
    """Open a socket, join (which waits for its connect's callback), close."""
    socket = browser(creds, **kw)
    socket.join("shop", bindings=ORDERS)
    socket.close()


def reason(frame: dict[str, Any]) -> str:
    assert frame["payload"]["status"] == "error", frame
    return str(frame["payload"]["response"]["reason"])


def test_a_session_cookie_gets_the_sites_the_callback_names(tenant, shop, browser):
    configure(tenant, shop)
    shop.answer = MEMBER
    socket = browser(tenant)
    joined = socket.join("shop", bindings=ORDERS)
    assert joined["payload"]["status"] == "ok", joined
    publish(tenant, 3, 1, 3, 2, 3)
    got = [f["payload"]["data"]["record"]["site_id"] for f in socket.changes(2)]
    assert got == [1, 2]
    assert socket.quiet(lambda f: f["event"] == "postgres_changes")
    (call,) = shop.calls
    assert call.signature_ok
    assert call.body["type"] == "connect"
    assert call.body["tenant"] == tenant.tenant.slug
    assert call.body["cookies"] == {"sessionid": "abc123", "csrftoken": "zz"}


def test_the_publishable_key_as_the_joins_token_still_means_the_session(
    tenant, shop, browser
):
    # supabase-js sends its key as access_token when it has no session.
    configure(tenant, shop)
    shop.answer = MEMBER
    socket = browser(tenant)
    joined = socket.join("shop", bindings=ORDERS, token=tenant.publishable_key)
    assert joined["payload"]["status"] == "ok", joined
    publish(tenant, 3, 2)
    assert [f["payload"]["data"]["record"]["site_id"] for f in socket.changes(1)] == [2]


def test_a_denial_refuses_the_join_with_the_shops_reason(tenant, shop, browser):
    configure(tenant, shop)
    shop.answer = deny("not signed in")
    socket = browser(tenant, headers={})
    refused = socket.join("shop", bindings=ORDERS)
    assert reason(refused) == (
        "Unauthorized: The authorization callback denied access: not signed in"
    )
    publish(tenant, 1, 2)
    assert socket.quiet(lambda f: f["event"] == "postgres_changes")
    assert shop.calls[0].body["cookies"] == {}
    row = ActivityLog.objects.get(event_type=EventType.AUTH_FAILED)
    assert row.tenant_id == tenant.tenant.pk
    assert "denied access: not signed in" in row.details["reason"]
    assert ActivityLog.objects.filter(
        event_type=EventType.JOIN_REFUSED, target="realtime:shop"
    ).exists()


def test_a_refused_socket_is_let_in_once_the_callback_allows(tenant, shop, browser):
    configure(tenant, shop)
    shop.answer = lambda asked: (500, b"{}")
    socket = browser(tenant)
    assert reason(socket.join("shop", bindings=ORDERS)).endswith("answered HTTP 500")
    shop.answer = MEMBER
    assert socket.join("shop", bindings=ORDERS)["payload"]["status"] == "ok"
    publish(tenant, 3, 1)
    assert [f["payload"]["data"]["record"]["site_id"] for f in socket.changes(1)] == [1]


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (500, b'{"allow": true, "role": "authenticated"}', "answered HTTP 500"),
        (302, b"", "answered HTTP 302"),
        (200, b"<html>sign in</html>", "answer is invalid: not JSON"),
        (200, b"[true]", "answer is invalid: not a JSON object"),
        (200, b'{"allow": "yes"}', "`allow` must be true or false"),
        (200, b'{"allow": true}', "`role` must be a non-empty string"),
        (
            200,
            b'{"allow": true, "role": "service_role"}',
            "`role` may not be service_role",
        ),
        (
            200,
            b'{"allow": true, "role": "a", "claims": {"n": '
            + b"[" * 100
            + b"]" * 100
            + b"}}",
            "nested deeper than",
        ),
        (
            200,
            b'{"allow": true, "role": "a", "claims": {"x": "' + b"y" * 70_000 + b'"}}',
            "answer is over 16384 bytes",
        ),
    ],
)
def test_errors_and_bad_answers_deny_and_say_why(
    tenant, shop, browser, status, body, expected
):
    configure(tenant, shop)
    shop.answer = lambda asked: (status, body)
    socket = browser(tenant)
    refused = socket.join("shop", bindings=ORDERS)
    assert reason(refused).startswith("Unauthorized: The authorization callback")
    assert expected in reason(refused)
    publish(tenant, 1)
    assert socket.quiet(lambda f: f["event"] == "postgres_changes")


def test_an_answer_without_a_length_is_cut_off_at_the_bound(tenant, shop, browser):
    configure(tenant, shop)
    shop.unsized = True
    shop.answer = lambda asked: (200, b" " * 100_000 + b'{"allow": true}')
    refused = browser(tenant).join("shop", bindings=ORDERS)
    assert reason(refused).endswith("answer is over 16384 bytes")


def test_a_hanging_callback_times_out_and_holds_up_no_other_socket(
    tenant, make_tenant, shop, browser, herald_server
):
    configure(tenant, shop, on_join=True, timeout=3.0)
    shop.answer = MEMBER
    socket = browser(tenant)
    shop.hang_on = {"join"}
    ref = socket.push("realtime:site:1", "phx_join", {"config": {"private": True}})
    while len(shop.calls) < 2:  # Herald is now waiting on the shop
        time.sleep(0.05)
    # Meanwhile another tenant's socket connects, joins and is answered.
    other = Socket(herald_server.ws_url, make_tenant("other").secret_key)
    assert other.join("x", bindings=ORDERS)["payload"]["status"] == "ok"
    other.close()
    refused = socket.reply_to(ref, timeout=30)
    assert reason(refused) == (
        "Unauthorized: The authorization callback did not answer within 3 s"
    )
    assert ActivityLog.objects.filter(
        event_type=EventType.JOIN_REFUSED, target="realtime:site:1"
    ).exists()


def test_a_connect_callback_that_hangs_refuses_the_joins(tenant, shop, browser):
    configure(tenant, shop, timeout=1.0)
    shop.hang_on = {"connect"}
    socket = browser(tenant)
    refused = socket.reply_to(
        socket.push("realtime:shop", "phx_join", {"config": {}}), timeout=30
    )
    assert reason(refused) == (
        "Unauthorized: The authorization callback did not answer within 1 s"
    )


def test_answers_are_cached_for_their_ttl_then_asked_again(tenant, shop, browser):
    configure(tenant, shop)
    ttl = 3
    shop.answer = allow(
        sub="u1", role="authenticated", claims={"site_ids": [1]}, ttl=ttl
    )
    visit(browser, tenant)
    visit(browser, tenant)  # the same cookies, within the TTL: not asked
    assert len(shop.calls) == 1
    visit(browser, tenant, headers={"Cookie": "sessionid=other"})
    assert len(shop.calls) == 2  # other cookies: another answer
    time.sleep(ttl + 0.5)
    visit(browser, tenant)
    assert len(shop.calls) == 3  # the answer lapsed: asked again


def test_a_lapsed_answer_is_renewed_and_a_refused_renewal_closes_the_channel(
    tenant, shop, browser
):
    configure(tenant, shop)
    shop.answer = allow(sub="u1", role="authenticated", claims={"site_ids": [1]}, ttl=2)
    socket = browser(tenant)
    assert socket.join("shop", bindings=ORDERS)["payload"]["status"] == "ok"
    while len(shop.calls) < 2:  # renewed at the TTL, still allowed
        time.sleep(0.1)
    publish(tenant, 1)
    assert [f["payload"]["data"]["record"]["site_id"] for f in socket.changes(1)] == [1]
    shop.answer = deny("signed out")
    error = socket.recv_until(lambda f: f["event"] == "system", timeout=15)
    assert error["payload"]["message"] == (
        "Unauthorized: The authorization callback denied access: signed out"
    )
    socket.recv_until(lambda f: f["event"] == "phx_close")
    assert ActivityLog.objects.filter(
        event_type=EventType.TOKEN_EXPIRED, target="realtime:shop"
    ).exists()


def test_private_joins_ask_the_callback_with_the_topic(tenant, shop, browser):
    configure(tenant, shop, on_join=True)

    def answer(asked: dict[str, Any]) -> tuple[int, bytes]:
        if asked["type"] == "join" and asked["topic"] != "site:1":
            return 200, json.dumps({"allow": False, "reason": "not a member"}).encode()
        return MEMBER(asked)

    shop.answer = answer
    socket = browser(tenant)
    assert socket.join("site:1", private=True)["payload"]["status"] == "ok"
    refused = socket.join("site:3", private=True)
    assert reason(refused) == (
        "Unauthorized: The authorization callback denied access: not a member"
    )
    # A public channel is not asked about.
    assert socket.join("lobby")["payload"]["status"] == "ok"
    asked = [(c.body["type"], c.body["topic"]) for c in shop.calls]
    assert asked == [("connect", None), ("join", "site:1"), ("join", "site:3")]
    assert all(c.signature_ok for c in shop.calls)


def test_a_socket_with_the_secret_key_is_never_asked(tenant, shop, herald_server):
    configure(tenant, shop, on_join=True)
    socket = Socket(herald_server.ws_url, tenant.secret_key, headers=SESSION)
    assert socket.join("shop", bindings=ORDERS)["payload"]["status"] == "ok"
    # service_role reads private channels without policies: still not asked.
    assert socket.join("p", private=True)["payload"]["status"] == "ok"
    socket.close()
    assert shop.calls == []


def test_the_documented_verifier_refuses_tampered_requests(tenant, shop, browser):
    configure(tenant, shop)
    shop.answer = MEMBER
    visit(browser, tenant)
    (call,) = shop.calls
    verify = readme_verifier()
    assert verify(shop.secret, call.signature, call.raw)
    tampered = call.raw.replace(b"abc123", b"abc124")
    assert not verify(shop.secret, call.signature, tampered)
    assert not verify("whsec_another", call.signature, call.raw)
    stale = int(time.time()) - 3600
    assert not verify(shop.secret, signature(shop.secret, stale, call.raw), call.raw)
    assert not verify(shop.secret, "garbage", call.raw)
    # And the shop's server refuses (403) what fails it: Herald then denies.
    shop.secret = "whsec_rotated_elsewhere"
    refused = browser(tenant, headers={"Cookie": "sessionid=new"}).join("shop")
    assert reason(refused).endswith("answered HTTP 403")


def test_set_auth_callback_prints_the_secret_once(tenant, shop, capsys):
    slug = tenant.tenant.slug
    call_command("set_auth_callback", "--tenant", slug, "--url", shop.url)
    first = capsys.readouterr().out
    assert "Signing secret (shown once): whsec_" in first
    secret = AuthCallback.objects.get(tenant=tenant.tenant).secret
    assert secret in first
    call_command("set_auth_callback", "--tenant", slug, "--url", shop.url, "--on-join")
    second = capsys.readouterr().out
    assert "whsec_" not in second
    callback = AuthCallback.objects.get(tenant=tenant.tenant)
    assert callback.on_join and callback.secret == secret
    call_command(
        "set_auth_callback", "--tenant", slug, "--url", shop.url, "--rotate-secret"
    )
    assert AuthCallback.objects.get(tenant=tenant.tenant).secret != secret
    assert (
        ActivityLog.objects.filter(
            event_type=EventType.POLICY_CHANGED, target="auth_callback"
        ).count()
        == 3
    )
    call_command("set_auth_callback", "--tenant", slug, "--remove")
    assert not AuthCallback.objects.filter(tenant=tenant.tenant).exists()


@pytest.mark.parametrize("kind", ["python", "realtime-js-v2", "supabase-js"])
def test_real_clients_get_what_the_callbacks_claims_allow(
    kind, tenant, shop, clients, herald_server
):
    # Outside a browser there are no cookies: this shop answers for the
    # socket all the same, as one that identifies by network might.
    configure(tenant, shop)
    shop.answer = MEMBER
    client = clients(kind, herald_server, apikey=tenant.publishable_key)
    client.subscribe("shop", ORDERS)
    publish(tenant, 3, 1, 3, 2, 3)
    client.change(lambda e: change_row(e).get("site_id") == 1)
    client.change(lambda e: change_row(e).get("site_id") == 2)
    client.assert_no(
        lambda e: e["event"] == "postgres_changes" and change_row(e)["site_id"] == 3,
        wait=0.5,
    )
    assert shop.calls[0].body["type"] == "connect" and shop.calls[0].signature_ok


@pytest.mark.parametrize("kind", ["python", "supabase-js"])
def test_real_clients_hear_why_the_callback_refused(
    kind, tenant, shop, clients, herald_server
):
    configure(tenant, shop)
    shop.answer = deny("not signed in")
    client = clients(kind, herald_server, apikey=tenant.publishable_key)
    status = client.subscribe("shop", ORDERS, expect="CHANNEL_ERROR")
    assert "The authorization callback denied access: not signed in" in str(
        status["error"]
    )


@pytest.mark.parametrize(
    "options",
    [
        ["--url", "ftp://shop.example.com/auth"],
        ["--url", "not a url"],
        ["--url", "https://shop.example.com/auth", "--timeout", "30"],
        ["--url", "https://shop.example.com/auth", "--max-ttl", "0"],
    ],
)
def test_set_auth_callback_refuses_bad_settings(tenant, options):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError):
        call_command("set_auth_callback", "--tenant", tenant.tenant.slug, *options)
    assert not AuthCallback.objects.exists()


def test_channel_policies_see_the_callbacks_claims(tenant, shop, browser):
    from realtime.services.policies import channel_policy_add

    configure(tenant, shop)  # asked on connect only
    channel_policy_add(
        tenant=tenant.tenant, pattern="site:{site}", role="authenticated"
    )
    shop.answer = allow(sub="u1", role="authenticated", claims={"site": 2})
    socket = browser(tenant)
    assert socket.join("site:2", private=True)["payload"]["status"] == "ok"
    refused = socket.join("site:3", private=True)
    assert reason(refused) == (
        "Unauthorized: You do not have permissions to read from this Channel topic: "
        "site:3"
    )
    assert [c.body["type"] for c in shop.calls] == ["connect"]


def test_the_per_user_limit_counts_the_callbacks_sub(tenant, shop, browser):
    tenant.tenant.max_connections_per_user = 1
    tenant.tenant.save()
    configure(tenant, shop)

    def by_cookie(asked: dict[str, Any]) -> tuple[int, bytes]:
        sub = asked["cookies"]["sessionid"]
        return allow(sub=sub, role="authenticated", claims={"site_ids": [1]})(asked)

    shop.answer = by_cookie
    ann = browser(tenant, headers={"Cookie": "sessionid=ann"})
    assert ann.join("room")["payload"]["status"] == "ok"
    again = browser(tenant, headers={"Cookie": "sessionid=ann"})
    frame = again.recv_until(lambda f: f["event"] == "phx_reply")
    assert frame["topic"] == "phoenix"
    assert frame["payload"]["response"]["reason"] == (
        "ConnectionRateLimitReached: Too many connections for this user"
    )
    bob = browser(tenant, headers={"Cookie": "sessionid=bob"})
    assert bob.join("room")["payload"]["status"] == "ok"


def test_oversized_cookies_are_refused_without_asking(tenant, shop, browser):
    configure(tenant, shop)
    shop.answer = MEMBER
    socket = browser(tenant, headers={"Cookie": "sessionid=" + "x" * 9000})
    refused = socket.join("shop", bindings=ORDERS)
    assert reason(refused) == (
        "Unauthorized: The cookies sent are over 8192 bytes; "
        "the authorization callback was not asked"
    )
    assert shop.calls == []


def test_the_connect_query_token_is_passed_on(tenant, shop, browser):
    configure(tenant, shop)
    shop.answer = MEMBER
    socket = browser(tenant, headers={}, query="&access_token=opaque-session-token")
    assert socket.join("shop", bindings=ORDERS)["payload"]["status"] == "ok"
    (call,) = shop.calls
    assert call.body["token"] == "opaque-session-token"
    assert call.body["cookies"] == {}
