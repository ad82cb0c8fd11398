"""The operators' dashboard, in Debian's headless Chromium against a real server."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.wire import Socket

# Debian's browser and driver (.ci/system-deps installs them). Naming both keeps
# Selenium Manager from trying to download either.
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
)
PASSWORD = "correct-horse-battery"

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="session")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """One headless Chromium for the session; always quit at the end."""
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not os.access(binary, os.X_OK):
            raise RuntimeError(f"{binary} not found: run `make system-deps`")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium')}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def browser(chromium: WebDriver) -> WebDriver:
    """The session's browser, signed out (each test's database starts empty)."""
    chromium.execute_cdp_cmd("Network.clearBrowserCookies", {})
    chromium.get("about:blank")
    return chromium


@pytest.fixture
def make_user(transactional_db: None) -> Callable[..., Any]:
    def make(username: str, *, is_staff: bool) -> Any:
        return get_user_model().objects.create_user(
            username, password=PASSWORD, is_staff=is_staff
        )

    return make


def wait_until(
    condition: Callable[[], bool], *, timeout: float = 10, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except WebDriverException:
            pass  # the element is being replaced; look again
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def admin_login(browser: WebDriver, server: Any, username: str) -> None:
    """Sign in through the real admin login form, landing on the dashboard."""
    browser.get(f"{server.url}/dashboard/")
    assert "/admin/login/" in browser.current_url  # sent to sign in first
    browser.find_element(By.ID, "id_username").send_keys(username)
    browser.find_element(By.ID, "id_password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait_until(
        lambda: browser.current_url == f"{server.url}/dashboard/",
        what="the dashboard after signing in",
    )


def figure(browser: WebDriver, slug: str, name: str) -> int:
    selector = f'tr[data-tenant="{slug}"] [data-field="{name}"]'
    return int(browser.find_element(By.CSS_SELECTOR, selector).text)


def newest_activity(browser: WebDriver) -> dict[str, str]:
    row = browser.find_element(By.CSS_SELECTOR, "#activity tbody tr")
    return {
        name: row.find_element(By.CSS_SELECTOR, f'[data-field="{name}"]').text
        for name in ("event", "tenant", "actor", "target")
    }


def mark_document(browser: WebDriver) -> None:
    browser.execute_script("window.__marker = 1")


def not_reloaded(browser: WebDriver) -> bool:
    return browser.execute_script("return window.__marker") == 1


def test_connections_and_channels_update_without_a_reload(
    browser, herald_server, tenant, make_user
):
    make_user("operator", is_staff=True)
    admin_login(browser, herald_server, "operator")
    slug = tenant.tenant.slug
    before = figure(browser, slug, "connections")
    assert figure(browser, slug, "channels") == 0
    mark_document(browser)

    socket = Socket(herald_server.ws_url, tenant.publishable_key)
    try:
        assert socket.join("room-1")["payload"]["status"] == "ok"
        wait_until(
            lambda: figure(browser, slug, "connections") == before + 1,
            what="one more connection on the page",
        )
        wait_until(lambda: figure(browser, slug, "channels") == 1, what="a channel")
        assert not_reloaded(browser)
    finally:
        socket.close()

    wait_until(
        lambda: figure(browser, slug, "connections") == before,
        what="the connection to go",
    )
    assert not_reloaded(browser)


def test_a_refused_join_shows_as_a_refusal_and_the_newest_activity(
    browser, herald_server, tenant, make_user
):
    make_user("operator", is_staff=True)
    admin_login(browser, herald_server, "operator")
    slug = tenant.tenant.slug
    assert figure(browser, slug, "refusals") == 0
    mark_document(browser)

    socket = Socket(herald_server.ws_url, tenant.publishable_key)
    try:
        # A private topic with no channel policy: refused.
        assert socket.join("vault", private=True)["payload"]["status"] == "error"
        wait_until(lambda: figure(browser, slug, "refusals") == 1, what="one refusal")
        wait_until(
            lambda: newest_activity(browser)["event"] == "join refused",
            what="the refusal at the top of the activity",
        )
    finally:
        socket.close()
    newest = newest_activity(browser)
    assert newest["tenant"] == slug
    assert newest["target"] == "realtime:vault"
    assert not_reloaded(browser)


def test_a_new_tenant_appears_and_its_suspension_shows(
    browser, herald_server, make_tenant, make_user
):
    make_user("operator", is_staff=True)
    admin_login(browser, herald_server, "operator")
    assert browser.find_element(By.ID, "no-tenants").is_displayed()
    mark_document(browser)

    paused = make_tenant("Paused").tenant
    state = f'tr[data-tenant="{paused.slug}"] [data-field="state"]'
    wait_until(
        lambda: browser.find_element(By.CSS_SELECTOR, state).text == "Active",
        what="the new tenant's row",
    )
    assert not browser.find_element(By.ID, "no-tenants").is_displayed()
    assert figure(browser, paused.slug, "connections") == 0

    paused.is_active = False
    paused.save(update_fields=["is_active"])
    wait_until(
        lambda: browser.find_element(By.CSS_SELECTOR, state).text == "Suspended",
        what="the suspended badge",
    )
    assert not_reloaded(browser)


def test_anonymous_visitors_are_sent_to_the_login_and_refused_data(herald_server):
    page = httpx.get(f"{herald_server.url}/dashboard/")
    assert page.status_code == 302
    assert page.headers["location"] == "/admin/login/?next=/dashboard/"

    data = httpx.get(f"{herald_server.url}/dashboard/data")
    assert data.status_code == 403
    assert data.json()["error"] == "forbidden"


def test_a_signed_in_user_who_is_not_staff_is_sent_to_the_login(
    herald_server, make_user
):
    client = Client()
    client.force_login(make_user("visitor", is_staff=False))  # a real session row
    cookies = {"sessionid": client.cookies["sessionid"].value}

    page = httpx.get(f"{herald_server.url}/dashboard/", cookies=cookies)
    assert page.status_code == 302
    assert page.headers["location"].startswith("/admin/login/")

    data = httpx.get(f"{herald_server.url}/dashboard/data", cookies=cookies)
    assert data.status_code == 403


def test_the_data_a_staff_member_reads_and_the_admin_link(
    herald_server, tenant, make_user
):
    client = Client()
    client.force_login(make_user("operator", is_staff=True))
    cookies = {"sessionid": client.cookies["sessionid"].value}

    data = httpx.get(f"{herald_server.url}/dashboard/data", cookies=cookies)
    assert data.status_code == 200
    assert data.headers["cache-control"].startswith("max-age=0")
    (row,) = data.json()["tenants"]
    assert row == {
        "slug": tenant.tenant.slug,
        "name": "Acme",
        "suspended": False,
        "connections": 0,
        "channels": 0,
        "deliveries": 0,
        "refusals": 0,
    }
    activity = data.json()["activity"]  # newest first
    assert [a["event"] for a in activity][-1] == "tenant created"
    assert {a["event"] for a in activity} == {"tenant created", "key created"}
    assert {a["tenant"] for a in activity} == {tenant.tenant.slug}

    admin_index = httpx.get(f"{herald_server.url}/admin/", cookies=cookies)
    assert 'href="/dashboard/"' in admin_index.text
