"""Tokens of trusted issuers: accepted when they should be, and every attack refused.

The JWKS is served over HTTP on loopback by the test (tests.issuers.JwksServer);
tokens go through the same resolution as a socket's `access_token` and a REST
`Authorization: Bearer` with the tenant's publishable key.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.test import override_settings

from audit.models import ActivityLog, EventType
from realtime import errors, jwks
from realtime.auth import Principal, principal_resolve
from realtime.jwks import key_cache
from realtime.services.issuers import trusted_issuer_add
from realtime.services.tenants import TenantCredentials
from tests.issuers import (
    JwksServer,
    KeyPair,
    claims,
    forged_hs256,
    jwks_of,
    key_pair,
    unsigned,
)

pytestmark = pytest.mark.django_db

ISS = "https://idp.example.com/"
HS_SECRET = "s" * 40


@pytest.fixture(autouse=True)
def _fresh_key_cache() -> Iterator[None]:
    key_cache.clear()
    yield
    key_cache.clear()


@pytest.fixture
def serve() -> Iterator[Callable[..., JwksServer]]:
    servers: list[JwksServer] = []

    def start(*pairs: KeyPair) -> JwksServer:
        servers.append(JwksServer(jwks_of(*pairs)))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def rsa() -> KeyPair:
    return key_pair("RSA")


def resolve(creds: TenantCredentials, token: str) -> Principal:
    return principal_resolve(apikey=creds.publishable_key, bearer=token)


def trust(creds: TenantCredentials, iss: str = ISS, **options: Any) -> None:
    trusted_issuer_add(tenant=creds.tenant, issuer=iss, **options)


def user_claims(iss: str = ISS, **extra: Any) -> dict[str, Any]:
    return claims(iss, sub="u1", role="authenticated", **extra)


@pytest.mark.parametrize("kty", ["RSA", "EC", "OKP"])
def test_rs256_es256_and_eddsa_tokens_of_a_jwks_are_accepted(tenant, serve, kty):
    pair = key_pair(kty)
    trust(tenant, jwks_url=serve(pair).url)
    principal = resolve(tenant, pair.sign(user_claims(site_id=7)))
    assert (principal.tenant, principal.role, principal.sub) == (
        tenant.tenant,
        "authenticated",
        "u1",
    )
    assert principal.claims["site_id"] == 7 and principal.exp


def test_static_pem_keys_verify_too(tenant):
    pair = key_pair("EC")
    trust(tenant, static_keys=pair.public_pem().decode())
    assert resolve(tenant, pair.sign(user_claims())).sub == "u1"


def test_a_token_naming_no_issuer_still_uses_the_tenants_secret(tenant, serve, rsa):
    trust(tenant, jwks_url=serve(rsa).url)
    token = jwt.encode(
        {**claims("https://other.example/"), "role": "authenticated"},
        tenant.tenant.jwt_secret,
        algorithm="HS256",
    )
    assert resolve(tenant, token).role == "authenticated"


def test_alg_none_is_refused(tenant, serve, rsa):
    trust(tenant, jwks_url=serve(rsa).url)
    with pytest.raises(errors.TokenSignatureError, match="none is not accepted"):
        resolve(tenant, unsigned(user_claims(), rsa.kid))


def test_a_token_resigned_as_hs256_with_the_public_key_is_refused(tenant, serve, rsa):
    trust(tenant, jwks_url=serve(rsa).url)
    forged = forged_hs256(user_claims(), rsa.public_pem(), rsa.kid)
    with pytest.raises(errors.TokenSignatureError):
        resolve(tenant, forged)


@pytest.mark.parametrize(
    "source, algorithms",
    [
        ({"jwks_url": "https://idp.example.com/jwks"}, ["HS256"]),
        ({"jwks_url": "https://idp.example.com/jwks"}, ["RS256", "HS512"]),
        ({"hs_secret": HS_SECRET}, ["RS256"]),
        ({"hs_secret": HS_SECRET}, ["none"]),
        ({"jwks_url": "https://idp.example.com/jwks"}, ["none"]),
        ({"hs_secret": "short"}, ["HS256"]),
    ],
)
def test_hmac_never_meets_public_keys_and_none_is_never_allowed(
    tenant, source, algorithms
):
    with pytest.raises(ValidationError):
        trust(tenant, algorithms=algorithms, **source)


def test_a_token_of_issuer_a_with_a_kid_of_issuer_b_is_refused(tenant, serve):
    a, b = key_pair("RSA"), key_pair("RSA")
    trust(tenant, "https://a.example/", jwks_url=serve(a).url)
    trust(tenant, "https://b.example/", jwks_url=serve(b).url)
    # B's keys are cached: a cache keyed by kid alone would now verify this.
    assert resolve(tenant, b.sign(user_claims("https://b.example/"))).sub == "u1"
    with pytest.raises(errors.TokenSignatureError):
        resolve(tenant, b.sign(user_claims("https://a.example/")))


def test_a_token_of_another_tenants_issuer_is_refused(make_tenant, serve, rsa):
    mine, theirs = make_tenant("Mine"), make_tenant("Theirs")
    trust(theirs, jwks_url=serve(rsa).url)
    token = rsa.sign(user_claims())
    assert resolve(theirs, token).tenant == theirs.tenant
    with pytest.raises(errors.AuthError):
        resolve(mine, token)  # no issuer here: the tenant's secret refuses it
    trust(mine, jwks_url=serve(key_pair("RSA")).url)  # same iss, other keys
    with pytest.raises(errors.TokenSignatureError):
        resolve(mine, token)


def test_an_expired_token_is_refused_saying_how_long_ago(tenant, serve, rsa):
    trust(tenant, jwks_url=serve(rsa).url)
    with pytest.raises(errors.TokenExpired) as refused:
        resolve(tenant, rsa.sign(user_claims(exp=int(time.time()) - 100)))
    assert refused.value.reason.startswith("InvalidJWTToken: Token has expired 10")


@pytest.mark.parametrize("exp", [float("inf"), 2**70])
def test_an_absurd_exp_is_refused(tenant, serve, rsa, exp):
    trust(tenant, jwks_url=serve(rsa).url)
    with pytest.raises(errors.TokenExpired, match="expiration time is invalid"):
        resolve(tenant, rsa.sign(user_claims(exp=exp)))


def test_leeway_allows_a_little_clock_skew(tenant, serve, rsa):
    trust(tenant, jwks_url=serve(rsa).url, leeway=30)
    assert resolve(tenant, rsa.sign(user_claims(exp=int(time.time()) - 5)))


def test_a_token_not_valid_yet_is_refused(tenant, serve, rsa):
    trust(tenant, jwks_url=serve(rsa).url)
    with pytest.raises(errors.TokenClaimInvalid, match="not valid yet"):
        resolve(tenant, rsa.sign(user_claims(nbf=int(time.time()) + 600)))


@pytest.mark.parametrize("aud", [{"aud": "someone-else"}, {}])
def test_a_wrong_or_missing_audience_is_refused(tenant, serve, rsa, aud):
    trust(tenant, jwks_url=serve(rsa).url, audience="herald")
    assert resolve(tenant, rsa.sign(user_claims(aud="herald")))
    with pytest.raises(errors.TokenClaimInvalid, match="audience"):
        resolve(tenant, rsa.sign(user_claims(**aud)))


def test_an_issuer_may_not_grant_service_role(tenant, serve, rsa):
    trust(tenant, jwks_url=serve(rsa).url)
    with pytest.raises(errors.TokenClaimInvalid, match="service_role"):
        resolve(tenant, rsa.sign(claims(ISS, role="service_role")))


def test_role_and_exp_stay_required(tenant, serve, rsa):
    trust(tenant, jwks_url=serve(rsa).url)
    no_role = {"iss": ISS, "exp": int(time.time()) + 60}
    no_exp = {"iss": ISS, "role": "authenticated"}
    for token_claims in (no_role, no_exp):
        with pytest.raises(errors.TokenClaimsMissing):
            resolve(tenant, rsa.sign(token_claims))


@pytest.mark.parametrize("mode", ["slow", "trickle", "garbage", "huge"])
def test_a_jwks_that_is_slow_garbage_or_huge_lets_nothing_through(
    tenant, serve, rsa, mode
):
    server = serve(rsa)
    server.mode = mode
    trust(tenant, jwks_url=server.url)
    started = time.monotonic()
    with pytest.raises(errors.IssuerKeysUnavailable) as refused:
        resolve(tenant, rsa.sign(user_claims()))
    assert time.monotonic() - started < jwks.FETCH_TIMEOUT + 1
    assert refused.value.reason.startswith("JwtSignerError: ")
    # Asked again at once, it answers from the failed attempt, still refusing.
    with pytest.raises(errors.IssuerKeysUnavailable):
        resolve(tenant, rsa.sign(user_claims()))
    assert server.hits == 1


def test_keys_that_can_no_longer_be_fetched_expire(tenant, serve, rsa, monkeypatch):
    server = serve(rsa)
    trust(tenant, jwks_url=server.url)
    assert resolve(tenant, rsa.sign(user_claims()))
    monkeypatch.setattr(jwks, "KEYS_MAX_AGE", 0.0)
    monkeypatch.setattr(jwks, "REFRESH_INTERVAL", 0.0)
    server.mode = "garbage"
    with pytest.raises(errors.IssuerKeysUnavailable):
        resolve(tenant, rsa.sign(user_claims()))


def test_a_rotated_key_is_picked_up_without_restart(tenant, serve, monkeypatch):
    old, new = key_pair("RSA"), key_pair("EC")
    server = serve(old)
    trust(tenant, jwks_url=server.url)
    assert resolve(tenant, old.sign(user_claims()))
    server.body = jwks_of(new)
    monkeypatch.setattr(jwks, "REFRESH_INTERVAL", 0.2)
    time.sleep(0.3)
    assert resolve(tenant, new.sign(user_claims())).sub == "u1"
    time.sleep(0.3)
    with pytest.raises(errors.TokenSignatureError):
        resolve(tenant, old.sign(user_claims()))  # retired from the JWKS


def test_unknown_kids_refetch_at_most_once_per_interval(tenant, serve, rsa):
    server = serve(rsa)
    trust(tenant, jwks_url=server.url)
    assert resolve(tenant, rsa.sign(user_claims()))
    for n in range(5):
        with pytest.raises(errors.TokenSignatureError):
            resolve(tenant, rsa.sign(user_claims(), kid=f"bogus-{n}"))
    assert server.hits == 1


def test_concurrent_lookups_share_one_fetch(serve, rsa):
    server = serve(rsa)
    server.delay = 0.5
    found: list[int] = []

    def look() -> None:
        found.append(len(key_cache.keys((1, 1, server.url), kid=rsa.kid)))

    threads = [threading.Thread(target=look) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert found == [1] * 8 and server.hits == 1


def test_the_same_kid_at_two_issuers_stays_apart(make_tenant, serve):
    a, b = key_pair("RSA"), key_pair("RSA")
    b.kid = a.kid  # issuers choose kids freely; they may collide
    first, second = make_tenant("First"), make_tenant("Second")
    trust(first, jwks_url=serve(a).url)
    trust(second, jwks_url=serve(b).url)
    assert resolve(first, a.sign(user_claims()))
    with pytest.raises(errors.TokenSignatureError):
        resolve(second, a.sign(user_claims()))


def test_a_simplejwt_token_is_accepted_through_claim_mapping(tenant):
    trust(
        tenant, hs_secret=HS_SECRET, sub_claim="user_id", default_role="authenticated"
    )
    simple_jwt = {"SIGNING_KEY": HS_SECRET, "ISSUER": ISS, "USER_ID_CLAIM": "user_id"}
    with override_settings(SIMPLE_JWT=simple_jwt):
        from rest_framework_simplejwt.backends import TokenBackend
        from rest_framework_simplejwt.settings import api_settings
        from rest_framework_simplejwt.tokens import AccessToken

        class SiteToken(AccessToken):
            # simplejwt builds its backend once, at import: this one reads the
            # overridden settings, as a project configured so would.
            _token_backend = TokenBackend(
                api_settings.ALGORITHM,
                api_settings.SIGNING_KEY,
                issuer=api_settings.ISSUER,
            )

        token = SiteToken.for_user(User(id=42, username="ann"))
        token["site_ids"] = [1, 2]
        raw = str(token)
    principal = resolve(tenant, raw)
    assert (principal.role, principal.sub) == ("authenticated", "42")
    assert principal.claims["user_id"] == "42"  # simplejwt sends ids as text
    assert principal.claims["site_ids"] == [1, 2]


def test_the_hs_secret_of_an_issuer_only_verifies_its_own_iss(tenant):
    trust(tenant, hs_secret=HS_SECRET, default_role="authenticated")
    token = jwt.encode(claims("https://other.example/"), HS_SECRET, algorithm="HS256")
    with pytest.raises(errors.TokenSignatureError):
        resolve(tenant, token)  # another iss: the tenant's own secret decides


# Committed: catch-up reads only changes of ended transactions (change_log.py).
@pytest.mark.django_db(transaction=True)
def test_a_rest_catch_up_with_an_issuer_token(api, tenant, serve, rsa):
    from realtime.services.changes import ChangeInput, live_updates_record
    from realtime.services.tenants import row_policy_add

    trust(tenant, jwks_url=serve(rsa).url)
    row_policy_add(
        tenant=tenant.tenant,
        table="orders",
        role="authenticated",
        rules=[{"column": "site_id", "claim": "site_id"}],
    )
    for site in (1, 2):
        change = ChangeInput(table="orders", type="INSERT", record={"site_id": site})
        live_updates_record(tenant=tenant.tenant, changes=[change])
    token = rsa.sign(user_claims(site_id=2))
    response = api.get(
        "/api/live-updates?since=0",
        HTTP_APIKEY=tenant.publishable_key,
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 200, response.content
    assert [c["record"]["site_id"] for c in response.json()["changes"]] == [2]
    forged = forged_hs256(user_claims(site_id=1), rsa.public_pem(), rsa.kid)
    refused = api.get(
        "/api/live-updates?since=0",
        HTTP_APIKEY=tenant.publishable_key,
        HTTP_AUTHORIZATION=f"Bearer {forged}",
    )
    assert refused.status_code == 401


def test_add_issuer_command_writes_an_activity_row(tenant, tmp_path, rsa, capsys):
    keys = tmp_path / "jwks.json"
    keys.write_bytes(jwks_of(rsa))
    call_command(
        "add_issuer",
        "--tenant",
        tenant.tenant.slug,
        "--issuer",
        ISS,
        "--jwks-file",
        str(keys),
        "--algorithms",
        "RS256,ES256",
        "--default-role",
        "authenticated",
    )
    assert "Added issuer" in capsys.readouterr().out
    row = ActivityLog.objects.get(event_type=EventType.ISSUER_ADDED)
    assert row.target == ISS and row.details["source"] == "static"
    assert resolve(tenant, rsa.sign(claims(ISS, sub="u9"))).role == "authenticated"
    with pytest.raises(CommandError, match="HS256/384/512 only"):
        call_command(
            "add_issuer",
            "--tenant",
            tenant.tenant.slug,
            "--issuer",
            "https://x.example/",
            "--hs-secret",
            HS_SECRET,
            "--algorithms",
            "RS256",
        )


def test_the_admin_never_shows_an_issuers_secret(client, tenant):
    client.force_login(User.objects.create_superuser("ops", "ops@x.org", "pw-12345"))
    trust(tenant, hs_secret=HS_SECRET, default_role="authenticated")
    issuer = tenant.tenant.issuers.get()
    page = client.get(f"/admin/realtime/trustedissuer/{issuer.pk}/change/")
    assert page.status_code == 200 and HS_SECRET not in page.content.decode()
    form = {
        "tenant": tenant.tenant.pk,
        "issuer": ISS,
        "hs_secret": "",  # left blank: kept
        "algorithms": '["HS256"]',
        "leeway": 0,
        "sub_claim": "sub",
        "role_claim": "role",
        "default_role": "member",
        "copied_claims": "null",
    }
    saved = client.post(f"/admin/realtime/trustedissuer/{issuer.pk}/change/", form)
    assert saved.status_code == 302, saved.content.decode()[:2000]
    issuer.refresh_from_db()
    assert (issuer.hs_secret, issuer.default_role) == (HS_SECRET, "member")
    assert ActivityLog.objects.filter(event_type=EventType.ISSUER_CHANGED).exists()


def test_copied_claims_narrow_what_policies_see(tenant, rsa):
    trust(tenant, static_keys=jwks_of(rsa).decode(), copied_claims=["site_id"])
    token = rsa.sign(user_claims(site_id=3, email="ann@example.com"))
    principal = resolve(tenant, token)
    assert principal.claims["site_id"] == 3 and "email" not in principal.claims
    assert (principal.sub, principal.role) == ("u1", "authenticated")


@pytest.mark.parametrize(
    "jwk",
    [
        {"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0", "kid": "h"},
        {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "d": "AA", "kid": "p"},
    ],
)
def test_symmetric_or_private_keys_are_refused_as_issuer_keys(tenant, jwk):
    import json

    with pytest.raises(ValidationError):
        trust(tenant, static_keys=json.dumps({"keys": [jwk]}))


def test_a_refused_issuer_token_is_logged_as_a_token_refusal(
    api, tenant, serve, rsa, monkeypatch
):
    from realtime.services import sockets

    monkeypatch.setattr(sockets, "_last_logged", {})  # refusals are throttled
    trust(tenant, jwks_url=serve(rsa).url, audience="herald")
    response = api.get(
        "/api/live-updates?since=0",
        HTTP_APIKEY=tenant.publishable_key,
        HTTP_AUTHORIZATION=f"Bearer {rsa.sign(user_claims(aud='elsewhere'))}",
    )
    assert response.status_code == 401
    assert response.json()["error"] == "token_claim_invalid"
    row = ActivityLog.objects.get(event_type=EventType.TOKEN_REFUSED)
    assert row.details["reason"] == "Token audience is not accepted"


def nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = {"deeper": value}
    return value


@pytest.mark.parametrize(
    "extra", [{"big": 2**70}, {"nan": float("nan")}, {"deep": nested(40)}]
)
def test_issuer_claims_must_be_plain_json(tenant, serve, rsa, extra):
    trust(tenant, jwks_url=serve(rsa).url)
    with pytest.raises(errors.MalformedToken, match="not plain JSON"):
        resolve(tenant, rsa.sign(user_claims(**extra)))
