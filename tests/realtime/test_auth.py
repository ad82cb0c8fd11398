"""Resolving keys and tokens: every way in that must stay shut."""

import base64
import hashlib
import hmac
import time

import jwt
import pytest

from realtime import errors
from realtime.auth import principal_from_apikey, principal_resolve, token_mint
from realtime.models import ApiKey
from realtime.services.tenants import api_key_revoke
from tests.wire import Socket

pytestmark = pytest.mark.django_db


def signed(secret: str, **claims: object) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


def test_publishable_key_acts_as_anon_of_its_tenant(tenant):
    principal = principal_from_apikey(tenant.publishable_key)
    assert (principal.tenant, principal.role) == (tenant.tenant, "anon")


def test_secret_key_acts_as_service_role(tenant):
    principal = principal_from_apikey(tenant.secret_key)
    assert principal.role == "service_role" and principal.is_service


def test_keys_resolve_only_to_their_own_tenant(make_tenant):
    a, b = make_tenant("A"), make_tenant("B")
    assert principal_from_apikey(a.secret_key).tenant == a.tenant
    assert principal_from_apikey(b.secret_key).tenant == b.tenant


@pytest.mark.parametrize("raw", ["", "   ", None])
def test_missing_key_is_refused(raw):
    with pytest.raises(errors.MissingKey):
        principal_from_apikey(raw)


def test_unknown_key_is_refused(tenant):
    with pytest.raises(errors.InvalidKey):
        principal_from_apikey(tenant.secret_key[:-2] + "xx")


def test_revoked_key_is_refused(tenant):
    key = ApiKey.objects.get(tenant=tenant.tenant, kind="secret")
    api_key_revoke(key=key)
    with pytest.raises(errors.InvalidKey):
        principal_from_apikey(tenant.secret_key)


def test_user_token_as_apikey_names_its_tenant(tenant):
    token = token_mint(
        tenant=tenant.tenant,
        role="authenticated",
        sub="u1",
        claims={"site_id": 42},
        ttl=60,
    )
    principal = principal_from_apikey(token)
    assert principal.tenant == tenant.tenant
    assert principal.role == "authenticated"
    assert principal.claims["site_id"] == 42 and principal.sub == "u1"


def test_expired_token_says_how_long_ago(tenant):
    token = signed(
        tenant.tenant.jwt_secret,
        role="anon",
        ref=tenant.tenant.slug,
        exp=int(time.time()) - 30,
    )
    with pytest.raises(errors.TokenExpired, match=r"Token has expired 3\d seconds ago"):
        principal_from_apikey(token)


def test_token_forged_with_another_tenants_secret_is_refused(make_tenant):
    victim, attacker = make_tenant("Victim"), make_tenant("Attacker")
    forged = signed(
        attacker.tenant.jwt_secret,
        role="service_role",
        ref=victim.tenant.slug,
        exp=int(time.time()) + 60,
    )
    with pytest.raises(errors.TokenSignatureError):
        principal_from_apikey(forged)


def test_unsigned_token_is_refused(tenant):
    unsigned = jwt.encode(
        {
            "role": "service_role",
            "ref": tenant.tenant.slug,
            "exp": int(time.time()) + 60,
        },
        None,
        algorithm="none",
    )
    with pytest.raises(errors.MalformedToken):
        principal_from_apikey(unsigned)


@pytest.mark.parametrize("claims", [{"role": "anon"}, {"exp": 4_000_000_000}])
def test_role_and_exp_are_required(tenant, claims):
    token = signed(tenant.tenant.jwt_secret, ref=tenant.tenant.slug, **claims)
    with pytest.raises(
        errors.TokenClaimsMissing, match="`role` and `exp` are required"
    ):
        principal_from_apikey(token)


def test_garbage_is_not_a_jwt(tenant):
    with pytest.raises(errors.MalformedToken):
        principal_from_apikey("not.a.jwt")


def test_bearer_token_decides_the_role(tenant):
    token = token_mint(tenant=tenant.tenant, role="authenticated", sub="u1", ttl=60)
    principal = principal_resolve(apikey=tenant.publishable_key, bearer=token)
    assert principal.role == "authenticated" and principal.sub == "u1"


def test_bearer_key_of_another_tenant_is_refused(make_tenant):
    a, b = make_tenant("A"), make_tenant("B")
    with pytest.raises(errors.InvalidKey):
        principal_resolve(apikey=a.publishable_key, bearer=b.secret_key)


def test_bearer_token_of_another_tenant_is_refused(make_tenant):
    a, b = make_tenant("A"), make_tenant("B")
    token = token_mint(tenant=b.tenant, role="service_role", ttl=60)
    with pytest.raises(errors.TokenSignatureError):
        principal_resolve(apikey=a.publishable_key, bearer=token)


def test_token_naming_another_tenant_is_refused_even_if_signed_here(make_tenant):
    a, b = make_tenant("A"), make_tenant("B")
    token = signed(
        a.tenant.jwt_secret, role="anon", ref=b.tenant.slug, exp=int(time.time()) + 60
    )
    with pytest.raises(errors.InvalidKey):
        principal_resolve(apikey=a.publishable_key, bearer=token)


def test_suspended_tenant_is_refused(tenant):
    tenant.tenant.is_active = False
    tenant.tenant.save()
    with pytest.raises(errors.TenantSuspended, match="Realtime was disabled"):
        principal_from_apikey(tenant.secret_key)


# --- Tokens whose numbers or nesting Herald could not send ----------------------


def hs256(secret: str, payload: str) -> str:
    """A JWT over the payload text as written: json.dumps cannot write 1e400."""

    def b64(raw: bytes) -> bytes:
        return base64.urlsafe_b64encode(raw).rstrip(b"=")

    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + b64(payload.encode())
    signature = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + b64(signature)).decode()


LATER = int(time.time()) + 3600
USER = f'"role": "authenticated", "sub": "u1", "exp": {LATER}'
NOT_PLAIN = "The token's claims are not plain JSON: "
UNSENDABLE = [
    ('{"role": "authenticated", "exp": 1e400}', "token_expired", "expiration"),
    ('{"role": "authenticated", "exp": Infinity}', "token_expired", "expiration"),
    ('{"role": "authenticated", "exp": -Infinity}', "token_expired", "expiration"),
    ('{"role": "authenticated", "exp": NaN}', "token_expired", "expiration"),
    (f'{{{USER}, "site_id": 18446744073709551616}}', "malformed_token", "64 bits"),
    (f'{{{USER}, "site_id": -9223372036854775809}}', "malformed_token", "64 bits"),
    (f'{{{USER}, "meta": {{"x": [NaN]}}}}', "malformed_token", "not finite"),
    (f'{{{USER}, "meta": {"[" * 32}1{"]" * 32}}}', "malformed_token", "32 levels"),
]
MESSAGES = {
    "expiration": "Token expiration time is invalid",
    "64 bits": NOT_PLAIN + "an integer does not fit in 64 bits",
    "not finite": NOT_PLAIN + "a number is not finite",
    "32 levels": NOT_PLAIN + "nested deeper than 32 levels",
}


def test_the_widest_plain_claims_are_accepted(tenant):
    payload = (
        f'{{{USER}, "a": 18446744073709551615, "b": -9223372036854775808, '
        f'"c": 1e300, "meta": {"[" * 31}1{"]" * 31}}}'
    )
    token = hs256(tenant.tenant.jwt_secret, payload)
    principal = principal_resolve(apikey=tenant.publishable_key, bearer=token)
    assert principal.claims["a"] == 2**64 - 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("payload", "code", "why"), UNSENDABLE)
def test_unsendable_claims_are_a_401_over_rest(api, tenant, payload, code, why):
    token = hs256(tenant.tenant.jwt_secret, payload)
    response = api.get(
        "/api/live-updates",
        {"apikey": tenant.publishable_key},
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 401, response.content
    assert response.json() == {"error": code, "message": MESSAGES[why]}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("payload", "code", "why"), UNSENDABLE)
def test_unsendable_claims_refuse_the_join_not_the_socket(
    tenant, herald_server, payload, code, why
):
    socket = Socket(herald_server.ws_url, tenant.publishable_key)
    token = hs256(tenant.tenant.jwt_secret, payload)
    refused = socket.join("room", token=token)
    assert refused["payload"]["status"] == "error"
    assert refused["payload"]["response"]["reason"].endswith(MESSAGES[why])
    # The socket is still open and still answers.
    ref = socket.push("phoenix", "heartbeat", {})
    assert socket.reply_to(ref)["payload"]["status"] == "ok"
    assert socket.join("room")["payload"]["status"] == "ok"
    socket.close()


def test_a_stale_issuer_is_reread_by_one_join_while_the_others_use_it(monkeypatch):
    """A join storm after the cache's TTL does not send every join to the
    database: one re-reads the issuer, the rest use the entry a little longer."""
    from realtime.auth import REFRESH_GRACE, KeyCache
    from realtime.models import TrustedIssuer

    now = [100.0]
    monkeypatch.setattr("realtime.auth.time.monotonic", lambda: now[0])
    cache = KeyCache(ttl=1, issuer_ttl=10)
    issuer = TrustedIssuer(pk=1, tenant_id=1, issuer="https://idp")
    assert cache.issuer(1, "https://idp") == (False, None)
    cache.keep_issuer(1, "https://idp", issuer)
    assert cache.issuer(1, "https://idp") == (True, issuer)
    now[0] += 11
    assert cache.issuer(1, "https://idp") == (False, None), "one join re-reads"
    assert cache.issuer(1, "https://idp") == (True, issuer), "the others go on"
    cache.keep_issuer(1, "https://idp", None)  # removed meanwhile: seen at once
    assert cache.issuer(1, "https://idp") == (True, None)
    now[0] += 10 + REFRESH_GRACE + 1  # stale past the grace: nobody uses it
    assert cache.issuer(1, "https://idp") == (False, None)
    cache.keep_issuer(1, "https://idp", issuer)
    cache.forget(tenant_id=1)  # the tenant's orders empty it
    assert cache.issuer(1, "https://idp") == (False, None)
