"""The management commands the README documents, run as a user would."""

import json
import subprocess
import sys
from pathlib import Path

import jwt
import pytest
from django.core.management import call_command

from realtime.auth import principal_from_apikey
from realtime.models import RowPolicy, Tenant

ROOT = Path(__file__).resolve().parents[2]


def run(env, *args):
    # A real process: what a user types, against this test's database.
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.django_db(transaction=True)
def test_create_tenant_json_prints_working_credentials(capsys):
    call_command("create_tenant", "Wedding Planner", "--slug", "weddings", "--json")
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"tenant", "publishable_key", "secret_key", "jwt_secret"}
    assert out["tenant"] == "weddings"
    assert principal_from_apikey(out["secret_key"]).role == "service_role"
    assert principal_from_apikey(out["publishable_key"]).role == "anon"
    assert Tenant.objects.get(slug="weddings").jwt_secret == out["jwt_secret"]


@pytest.mark.django_db(transaction=True)
def test_create_tenant_refuses_a_taken_slug(capsys, subprocess_env):
    call_command("create_tenant", "One", "--slug", "same", "--json")
    result = run(subprocess_env, "create_tenant", "Two", "--slug", "same", "--json")
    assert result.returncode != 0 and "already exists" in result.stderr
    assert Tenant.objects.filter(slug="same").count() == 1


@pytest.mark.django_db(transaction=True)
def test_mint_token_prints_a_token_the_server_accepts(tenant, subprocess_env):
    result = run(
        subprocess_env,
        "mint_token",
        "--tenant",
        tenant.tenant.slug,
        "--role",
        "authenticated",
        "--sub",
        "user-9",
        "--claim",
        "site_id=42",
        "--claim",
        "supplier_id=s1",
        "--ttl",
        "120",
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    claims = jwt.decode(token, tenant.tenant.jwt_secret, algorithms=["HS256"])
    assert claims["role"] == "authenticated" and claims["sub"] == "user-9"
    assert claims["site_id"] == "42" and claims["supplier_id"] == "s1"
    assert (
        claims["ref"] == tenant.tenant.slug
        and 110 <= claims["exp"] - claims["iat"] <= 120
    )
    assert principal_from_apikey(token).sub == "user-9"


@pytest.mark.django_db(transaction=True)
def test_mint_token_for_an_unknown_tenant_fails(subprocess_env):
    result = run(subprocess_env, "mint_token", "--tenant", "nobody", "--role", "anon")
    assert result.returncode != 0 and "No tenant 'nobody'" in result.stderr


@pytest.mark.django_db
def test_add_row_policy(tenant, capsys):
    call_command(
        "add_row_policy",
        "--tenant",
        tenant.tenant.slug,
        "--table",
        "live_updates",
        "--role",
        "authenticated",
        "--match",
        "site_id=site_id",
    )
    call_command(
        "add_row_policy",
        "--tenant",
        tenant.tenant.slug,
        "--table",
        "live_updates",
        "--role",
        "anon",
    )
    rules = {p.role: p.rules for p in RowPolicy.objects.filter(tenant=tenant.tenant)}
    assert rules == {
        "authenticated": [{"column": "site_id", "claim": "site_id"}],
        "anon": [],
    }


@pytest.mark.django_db
def test_add_row_policy_with_match_any(tenant, capsys):
    call_command(
        "add_row_policy",
        "--tenant",
        tenant.tenant.slug,
        "--table",
        "orders",
        "--role",
        "authenticated",
        "--match-any",
        "site_id=site_ids",
        "--match",
        "kind=kind",
    )
    assert "site_id in claims.site_ids" in capsys.readouterr().out
    assert RowPolicy.objects.get().rules == [
        {"column": "kind", "claim": "kind"},
        {"column": "site_id", "claim": "site_ids", "any": True},
    ]


@pytest.mark.django_db
def test_add_row_policy_refuses_a_column_that_is_not_an_identifier(tenant):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError):
        call_command(
            "add_row_policy",
            "--tenant",
            tenant.tenant.slug,
            "--table",
            "t",
            "--role",
            "anon",
            "--match",
            "site_id) OR (1=1=site_id",
        )
    assert not RowPolicy.objects.exists()


@pytest.mark.django_db
def test_add_channel_policy(tenant):
    from realtime.models import ChannelPolicy

    call_command(
        "add_channel_policy",
        "--tenant",
        tenant.tenant.slug,
        "--pattern",
        "site:{site_id}",
        "--role",
        "authenticated",
        "--write",
    )
    policy = ChannelPolicy.objects.get(tenant=tenant.tenant)
    assert (policy.pattern, policy.role, policy.read, policy.write) == (
        "site:{site_id}",
        "authenticated",
        True,
        True,
    )
