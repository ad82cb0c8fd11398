"""Resolving keys and tokens: every way in that must stay shut."""

import time

import jwt
import pytest

from realtime import errors
from realtime.auth import principal_from_apikey, principal_resolve, token_mint
from realtime.models import ApiKey
from realtime.services.tenants import api_key_revoke

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
