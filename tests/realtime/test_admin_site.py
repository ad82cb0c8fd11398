"""The admin login: throttled per client IP and per user name (429)."""

import time
import types

import pytest
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import User

from audit.models import ActivityLog, EventType

pytestmark = pytest.mark.django_db(transaction=True)

LOGIN = "/admin/login/?next=/admin/"


@pytest.fixture(autouse=True)
def fast_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def frozen_rate_clock(monkeypatch):
    now = time.time()
    monkeypatch.setattr(
        "django_ratelimit.core.time", types.SimpleNamespace(time=lambda: now)
    )


@pytest.fixture
def password_checks(monkeypatch):
    """How many times a password was checked against the database."""
    checks = []
    original = ModelBackend.authenticate

    def counted(self, request, username=None, password=None, **kwargs):
        checks.append(username)
        return original(self, request, username, password, **kwargs)

    monkeypatch.setattr(ModelBackend, "authenticate", counted)
    return checks


def attempt(client, username, password, ip):
    return client.post(
        LOGIN, {"username": username, "password": password}, REMOTE_ADDR=ip
    )


def logged_in(client):
    return "_auth_user_id" in client.session


def test_guessing_from_one_address_is_stopped_even_with_the_right_password(
    client, frozen_rate_clock, password_checks
):
    User.objects.create_superuser("ops-a", "a@example.com", "right-pw")
    users = [f"guess-{n}" for n in range(10)]
    statuses = [attempt(client, u, "wrong", "198.51.100.20").status_code for u in users]
    assert statuses == [200] * 10  # the login page again, with its error
    refused = attempt(client, "ops-a", "right-pw", "198.51.100.20")
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) >= 1
    assert "Too many login attempts" in refused.content.decode()
    assert not logged_in(client)
    assert "ops-a" not in password_checks  # refused before the password check
    # Another address is not held back by this one.
    assert attempt(client, "ops-a", "right-pw", "198.51.100.21").status_code == 302
    assert logged_in(client)
    logged = ActivityLog.objects.get(event_type=EventType.RATE_LIMITED)
    assert (logged.ip, logged.target) == ("198.51.100.20", "admin-login:ops-a")


def test_guessing_one_users_password_from_many_addresses_is_stopped(
    client, frozen_rate_clock
):
    User.objects.create_superuser("ops-b", "b@example.com", "right-pw")
    for n in range(5):
        assert attempt(client, "ops-b", "wrong", f"198.51.100.{30 + n}").status_code
    refused = attempt(client, "OPS-B", "right-pw", "198.51.100.40")
    assert refused.status_code == 429 and not logged_in(client)
    # Another user is not held back by this one.
    User.objects.create_superuser("ops-c", "c@example.com", "right-pw")
    assert attempt(client, "ops-c", "right-pw", "198.51.100.41").status_code == 302


def test_the_limits_are_settings(client, settings, frozen_rate_clock):
    settings.HERALD_ADMIN_LOGIN_RATE_IP = "2/m"
    User.objects.create_superuser("ops-d", "d@example.com", "right-pw")
    assert attempt(client, "x1", "wrong", "198.51.100.50").status_code == 200
    assert attempt(client, "x2", "wrong", "198.51.100.50").status_code == 200
    assert attempt(client, "ops-d", "right-pw", "198.51.100.50").status_code == 429


def test_viewing_the_login_page_is_not_counted(client, frozen_rate_clock):
    for _ in range(20):
        assert client.get(LOGIN, REMOTE_ADDR="198.51.100.60").status_code == 200
