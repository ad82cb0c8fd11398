"""POST /api/tokens: a secret key mints a short-lived user token that works."""

import time

import jwt
import orjson
import pytest

from realtime.auth import token_mint
from realtime.services.changes import ChangeInput, live_updates_record
from realtime.services.tenants import row_policy_add

pytestmark = pytest.mark.django_db(transaction=True)


def mint(api, key, body, bearer=None):
    headers = {"HTTP_APIKEY": key}
    if bearer:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {bearer}"
    return api.post(
        "/api/tokens", orjson.dumps(body), content_type="application/json", **headers
    )


def test_minted_token_carries_sub_role_claims_and_sees_its_rows(api, tenant):
    row_policy_add(
        tenant=tenant.tenant,
        table="orders",
        role="authenticated",
        rules=[{"column": "site_id", "claim": "site_id"}],
    )
    mine, _ = (
        live_updates_record(
            tenant=tenant.tenant,
            changes=[ChangeInput(table="orders", type="INSERT", record={"site_id": s})],
        )[0].pk
        for s in (42, 7)
    )
    response = mint(
        api,
        tenant.secret_key,
        {
            "sub": "user-9",
            "role": "authenticated",
            "claims": {"site_id": 42},
            "ttl": 120,
        },
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 120
    claims = jwt.decode(
        body["access_token"], tenant.tenant.jwt_secret, algorithms=["HS256"]
    )
    assert (claims["sub"], claims["role"], claims["site_id"]) == (
        "user-9",
        "authenticated",
        42,
    )
    assert claims["ref"] == tenant.tenant.slug
    assert claims["exp"] == body["expires_at"]
    assert 110 <= claims["exp"] - time.time() <= 121

    seen = api.get(
        "/api/live-updates",
        HTTP_APIKEY=tenant.publishable_key,
        HTTP_AUTHORIZATION=f"Bearer {body['access_token']}",
    ).json()
    assert [c["seq"] for c in seen["changes"]] == [mine]
    # As the apikey itself, it names its tenant.
    alone = api.get("/api/live-updates", HTTP_APIKEY=body["access_token"])
    assert alone.status_code == 200


def test_the_default_is_a_short_lived_authenticated_token(api, tenant, settings):
    body = mint(api, tenant.secret_key, {}).json()
    claims = jwt.decode(
        body["access_token"], tenant.tenant.jwt_secret, algorithms=["HS256"]
    )
    assert claims["role"] == "authenticated" and "sub" not in claims
    assert body["expires_in"] == settings.HERALD_TOKEN_TTL


@pytest.mark.parametrize("who", ["publishable", "service_token", "user_token"])
def test_only_a_secret_key_mints(api, tenant, who):
    if who == "publishable":
        response = mint(api, tenant.publishable_key, {"sub": "x"})
    else:
        role = "service_role" if who == "service_token" else "authenticated"
        token = token_mint(tenant=tenant.tenant, role=role, ttl=60)
        response = mint(api, tenant.publishable_key, {"sub": "x"}, bearer=token)
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"


def test_minting_needs_a_valid_key(api):
    response = mint(api, "sk_not_a_key", {"sub": "x"})
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"claims": {"exp": 1}}, "claims: 'exp' is set by Herald"),
        ({"claims": {"role": "x"}}, "claims: 'role' is set by Herald; use the field"),
        ({"ttl": 0}, "ttl: "),
        ({"ttl": 10**9}, "ttl: "),
        ({"claims": [1]}, "claims: "),
        ({"sub": ""}, "sub: "),
    ],
)
def test_bad_requests_are_refused(api, tenant, body, message):
    response = mint(api, tenant.secret_key, body)
    assert response.status_code == 400
    assert response.json()["message"].startswith(message)
