"""Durable subscriptions over REST: subscribe, poll, unsubscribe, and every refusal."""

import time
import types

import orjson
import pytest

from realtime.auth import token_mint
from realtime.models import Tenant
from realtime.services.tenants import row_policy_add
from subscriptions.models import DurableSubscription
from tests.subscriptions.support import (
    KEPT_OLD,
    MOVED_OLD,
    SECRET,
    publish,
    publish_updates,
    subscribe,
    supplier_token,
)

pytestmark = pytest.mark.django_db(transaction=True)

FORM = {"channels": ["form-responses"], "filters": {"supplier_id": "s-1"}}


def poll(api, creds, token, subscription_id, **params):
    return api.get(
        f"/api/realtime/subscriptions/{subscription_id}/changes",
        params,
        HTTP_APIKEY=creds.publishable_key,
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


def unsubscribe(api, creds, token, ids):
    return api.post(
        "/api/realtime/unsubscribe",
        orjson.dumps({"ids": ids}),
        content_type="application/json",
        HTTP_APIKEY=creds.publishable_key,
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


@pytest.fixture
def frozen_rate_clock(monkeypatch):
    """django-ratelimit counts in fixed windows: keep the test inside one."""
    now = time.time()
    monkeypatch.setattr(
        "django_ratelimit.core.time", types.SimpleNamespace(time=lambda: now)
    )


def test_subscribe_to_a_named_channel(api, form_responses):
    token = supplier_token(form_responses, "s-1")
    response = subscribe(api, form_responses, FORM, token=token)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["success"] is True
    [sub] = body["subscriptions"]
    assert {k: sub[k] for k in ("channel", "status", "filter", "delivery")} == {
        "channel": "form-responses",
        "status": "active",
        "filter": "supplier_id=eq.s-1",
        "delivery": "polling",
    }
    row = DurableSubscription.objects.get(pk=sub["id"])
    assert (row.sub, row.role, row.table) == (
        "user-1",
        "authenticated",
        "form_responses",
    )
    assert row.claims["supplier_id"] == "s-1" and "exp" not in row.claims


def test_polling_returns_the_matching_changes_in_order_and_moves_on(
    api, form_responses
):
    tenant = form_responses
    token = supplier_token(tenant, "s-1")
    publish(tenant, "form_responses", id=0, supplier_id="s-1")  # before subscribing
    sub_id = subscribe(api, tenant, FORM, token=token).json()["subscriptions"][0]["id"]
    wanted = [publish(tenant, "form_responses", id=1, supplier_id="s-1")]
    publish(tenant, "form_responses", id=2, supplier_id="s-2")
    publish(tenant, "other_table", id=3, supplier_id="s-1")
    wanted.append(
        publish(tenant, "form_responses", "UPDATE", id=1, supplier_id="s-1", a=1)
    )
    wanted.append(publish(tenant, "form_responses", "DELETE", id=1, supplier_id="s-1"))

    first = poll(api, tenant, token, sub_id)
    assert first.status_code == 200, first.content
    body = first.json()
    assert [c["seq"] for c in body["changes"]] == wanted
    assert [c["type"] for c in body["changes"]] == ["INSERT", "UPDATE", "DELETE"]
    assert body["subscription"] == sub_id and body["has_more"] is False

    assert poll(api, tenant, token, sub_id).json()["changes"] == []
    again = poll(api, tenant, token, sub_id, after=wanted[0] - 1).json()
    assert [c["seq"] for c in again["changes"]] == wanted
    row = DurableSubscription.objects.get(pk=sub_id)
    assert row.delivered_count == 3  # re-reading does not count twice
    assert row.cursor >= wanted[-1]


def test_polling_shows_an_updates_old_row_only_to_who_may_see_it(api, form_responses):
    """s-1 gets a response moved from s-2 with the old row cut to its id, s-2
    gets nothing of it, the secret key gets the old row whole."""
    tenant = form_responses
    every = {"channels": [{"table": "form_responses"}]}
    s1, s2 = supplier_token(tenant, "s-1"), supplier_token(tenant, "s-2", "user-2")
    mine = subscribe(api, tenant, FORM, token=s1).json()["subscriptions"][0]["id"]
    theirs = subscribe(api, tenant, every, token=s2).json()["subscriptions"][0]["id"]
    service = subscribe(api, tenant, every).json()["subscriptions"][0]["id"]
    moved, kept = publish_updates(tenant)

    polled = poll(api, tenant, s1, mine)
    assert b"secret" not in polled.content
    assert [(c["seq"], c["old_record"]) for c in polled.json()["changes"]] == [
        (moved, {"id": 1}),
        (kept, KEPT_OLD),
    ]
    assert poll(api, tenant, s2, theirs).json()["changes"] == []
    as_service = api.get(
        f"/api/realtime/subscriptions/{service}/changes",
        HTTP_APIKEY=tenant.secret_key,
    ).json()
    assert [c["old_record"] for c in as_service["changes"]] == [MOVED_OLD, KEPT_OLD]


def test_pages_of_a_subscription(api, form_responses):
    tenant = form_responses
    token = supplier_token(tenant, "s-1")
    sub_id = subscribe(api, tenant, FORM, token=token).json()["subscriptions"][0]["id"]
    wanted = [
        publish(tenant, "form_responses", id=i, supplier_id="s-1") for i in range(5)
    ]
    got = []
    while True:
        body = poll(api, tenant, token, sub_id, limit=2).json()
        got += [c["seq"] for c in body["changes"]]
        if not body["has_more"]:
            break
    assert got == wanted


def test_a_filter_the_principal_may_not_see_is_refused(api, form_responses):
    token = supplier_token(form_responses, "s-1")
    body = {"channels": ["form-responses"], "filters": {"supplier_id": "s-2"}}
    response = subscribe(api, form_responses, body, token=token)
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert "supplier_id" in response.json()["message"]
    assert not DurableSubscription.objects.exists()


def test_the_secret_key_may_subscribe_to_any_supplier(api, form_responses):
    body = {"channels": ["form-responses"], "filters": {"supplier_id": 42}}
    response = subscribe(api, form_responses, body)
    assert response.status_code == 200
    assert response.json()["subscriptions"][0]["filter"] == "supplier_id=eq.42"


def test_a_missing_required_filter_is_refused(api, form_responses):
    token = supplier_token(form_responses, "s-1")
    response = subscribe(api, form_responses, {"channels": ["form-responses"]}, token)
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid",
        "message": "filters.supplier_id: required by channel 'form-responses'",
    }
    assert not DurableSubscription.objects.exists()


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"channels": ["no-such-channel"]}, 400, "channels[0]: no channel"),
        ({"channels": []}, 400, "channels: "),
        ({"channels": [{"table": "a.b"}]}, 400, "is not a plain identifier"),
        (
            {"channels": [{"table": "orders", "filter": "id=regex.1"}]},
            400,
            "Error parsing `filter` params",
        ),
        ({"channels": [{"table": "orders"}]}, 403, "may not see rows of 'orders'"),
        ({"channels": [7]}, 400, "channels[0]: Must be a channel name"),
        (
            {**FORM, "webhook": {"url": "ftp://example.com/x", "secret": SECRET}},
            400,
            "webhook.url",
        ),
    ],
)
def test_bad_subscriptions_are_refused(api, form_responses, body, status, message):
    token = supplier_token(form_responses, "s-1")
    response = subscribe(api, form_responses, body, token=token)
    assert response.status_code == status, response.content
    assert message in response.json()["message"]
    assert not DurableSubscription.objects.exists()


def test_an_inline_binding_the_policy_allows(api, form_responses):
    token = supplier_token(form_responses, "s-1")
    binding = {"table": "form_responses", "filter": "status=eq.new", "event": "INSERT"}
    response = subscribe(api, form_responses, {"channels": [binding]}, token=token)
    assert response.status_code == 200, response.content
    [sub] = response.json()["subscriptions"]
    assert (sub["channel"], sub["event"], sub["filter"]) == (
        "form_responses",
        "INSERT",
        "status=eq.new",
    )


@pytest.mark.parametrize(
    ("credentials", "error"),
    [
        ({}, "missing_api_key"),
        ({"HTTP_APIKEY": "pk_nope"}, "invalid_api_key"),
        ("expired", "token_expired"),
        ("forged", "invalid_token_signature"),
    ],
)
def test_subscribe_without_valid_credentials_is_401(
    api, form_responses, make_tenant, credentials, error
):
    if credentials == "expired":
        token = token_mint(tenant=form_responses.tenant, role="authenticated", ttl=-5)
        credentials = {
            "HTTP_APIKEY": form_responses.publishable_key,
            "HTTP_AUTHORIZATION": f"Bearer {token}",
        }
    elif credentials == "forged":
        other = make_tenant("Other")
        token = token_mint(tenant=other.tenant, role="authenticated", ttl=60)
        credentials = {
            "HTTP_APIKEY": form_responses.publishable_key,
            "HTTP_AUTHORIZATION": f"Bearer {token}",
        }
    response = api.post(
        "/api/realtime/subscribe",
        orjson.dumps(FORM),
        content_type="application/json",
        **credentials,
    )
    assert response.status_code == 401
    assert response.json()["error"] == error
    assert not DurableSubscription.objects.exists()


def test_subscribe_is_limited_to_10_per_minute_per_principal(
    api, form_responses, frozen_rate_clock
):
    token = supplier_token(form_responses, "s-1")
    for _ in range(10):
        assert subscribe(api, form_responses, FORM, token=token).status_code == 200
    refused = subscribe(api, form_responses, FORM, token=token)
    assert refused.status_code == 429
    assert refused.json()["error"] == "rate_limited"
    assert "10/m" in refused.json()["message"]
    assert 1 <= int(refused["Retry-After"]) <= 61
    # Another principal of the same tenant has its own budget.
    other = supplier_token(form_responses, "s-2", sub="user-2")
    body = {"channels": ["form-responses"], "filters": {"supplier_id": "s-2"}}
    assert subscribe(api, form_responses, body, token=other).status_code == 200


def test_a_tenant_sets_its_own_subscribe_limit(api, form_responses, frozen_rate_clock):
    Tenant.objects.filter(pk=form_responses.tenant.pk).update(
        rate_limits={"subscribe": "2/m"}
    )
    token = supplier_token(form_responses, "s-1")
    statuses = [
        subscribe(api, form_responses, FORM, token).status_code for _ in range(3)
    ]
    assert statuses == [200, 200, 429]


def test_subscribing_again_returns_the_same_subscription(api, form_responses):
    token = supplier_token(form_responses, "s-1")
    first = subscribe(api, form_responses, FORM, token=token).json()
    again = subscribe(api, form_responses, FORM, token=token).json()
    assert first["subscriptions"][0]["id"] == again["subscriptions"][0]["id"]
    assert DurableSubscription.objects.count() == 1


def test_unsubscribe_closes_and_polling_stops(api, form_responses):
    token = supplier_token(form_responses, "s-1")
    sub_id = subscribe(api, form_responses, FORM, token).json()["subscriptions"][0][
        "id"
    ]
    response = unsubscribe(api, form_responses, token, [sub_id])
    assert response.status_code == 200
    assert response.json() == {"success": True, "unsubscribed": [sub_id]}
    assert DurableSubscription.objects.get(pk=sub_id).state == "closed"
    assert poll(api, form_responses, token, sub_id).status_code == 404


def test_another_principals_subscription_is_not_found(api, form_responses):
    token = supplier_token(form_responses, "s-1")
    sub_id = subscribe(api, form_responses, FORM, token).json()["subscriptions"][0][
        "id"
    ]
    intruder = supplier_token(form_responses, "s-1", sub="user-2")
    assert poll(api, form_responses, intruder, sub_id).status_code == 404
    refused = unsubscribe(api, form_responses, intruder, [sub_id])
    assert refused.status_code == 404 and refused.json()["error"] == "not_found"
    assert DurableSubscription.objects.get(pk=sub_id).state == "active"


def test_a_webhook_subscription_is_not_polled(api, form_responses, settings):
    settings.HERALD_WEBHOOK_ALLOW_PRIVATE = True
    token = supplier_token(form_responses, "s-1")
    body = {**FORM, "webhook": {"url": "http://127.0.0.1:9/hook", "secret": SECRET}}
    response = subscribe(api, form_responses, body, token)
    assert response.status_code == 200, response.content
    sub_id = response.json()["subscriptions"][0]["id"]
    refused = poll(api, form_responses, token, sub_id)
    assert refused.status_code == 409 and refused.json()["error"] == "conflict"


# --- Ownerless principals: a bare publishable key, a token without `sub` ---------

NEWS = {"channels": [{"table": "news"}]}


def as_visitor(api, creds, method, path, body=None, token=None):
    headers = {"HTTP_APIKEY": creds.publishable_key}
    if token:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    if method == "get":
        return api.get(path, **headers)
    return api.post(
        path, orjson.dumps(body), content_type="application/json", **headers
    )


@pytest.fixture
def news(tenant):
    row_policy_add(tenant=tenant.tenant, table="news", role="anon", rules=[])
    row_policy_add(tenant=tenant.tenant, table="news", role="authenticated", rules=[])
    return tenant


@pytest.mark.parametrize("token", [None, "authenticated without sub"])
def test_a_principal_naming_nobody_may_not_subscribe(api, news, token):
    if token:
        token = token_mint(tenant=news.tenant, role="authenticated", ttl=60)
    response = as_visitor(api, news, "post", "/api/realtime/subscribe", NEWS, token)
    assert response.status_code == 403, response.content
    assert response.json()["error"] == "forbidden"
    assert "a user token with `sub` is required" in response.json()["message"]
    assert not DurableSubscription.objects.exists()


def test_one_visitor_cannot_list_poll_or_close_anothers(api, news):
    # Made before subscribing needed a `sub`: every visitor has the same identity.
    theirs = DurableSubscription.objects.create(
        tenant=news.tenant, role="anon", sub="", channel="news", table="news"
    )
    status = as_visitor(api, news, "get", "/api/realtime/status")
    assert status.status_code == 200 and status.json()["subscriptions"] == []
    polled = f"/api/realtime/subscriptions/{theirs.pk}/changes"
    assert as_visitor(api, news, "get", polled).status_code == 404
    closing = {"ids": [theirs.pk]}
    closed = as_visitor(api, news, "post", "/api/realtime/unsubscribe", closing)
    assert closed.status_code == 404
    theirs.refresh_from_db()
    assert theirs.state == DurableSubscription.State.ACTIVE


def test_a_user_with_sub_and_the_secret_key_may_subscribe(api, news):
    token = token_mint(tenant=news.tenant, role="authenticated", sub="u1", ttl=60)
    mine = as_visitor(api, news, "post", "/api/realtime/subscribe", NEWS, token)
    assert mine.status_code == 200, mine.content
    [listed] = as_visitor(api, news, "get", "/api/realtime/status", token=token).json()[
        "subscriptions"
    ]
    assert listed["id"] == mine.json()["subscriptions"][0]["id"]
    assert subscribe(api, news, NEWS).status_code == 200  # the secret key
    # Neither is a visitor's to see.
    visitor = as_visitor(api, news, "get", "/api/realtime/status")
    assert visitor.json()["subscriptions"] == []
