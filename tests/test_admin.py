"""The operators' admin: keys shown once, actions that reach live sockets."""

import pytest
from django.contrib.auth.models import User

from audit.models import ActivityLog, EventType
from realtime.auth import principal_from_apikey
from realtime.models import ApiKey, AuthCallback, ChannelPolicy, RowPolicy, Tenant
from subscriptions.models import Subscription
from tests.wire import Socket

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def staff(client):
    user = User.objects.create_superuser("ops", "ops@example.com", "pw-123456")
    client.force_login(user)
    return client


def test_a_new_key_is_shown_once_and_works(staff, tenant):
    response = staff.post(
        "/admin/realtime/apikey/add/",
        {"tenant": tenant.tenant.pk, "kind": "secret", "name": "ci"},
        follow=True,
    )
    [message] = [m for m in map(str, response.context["messages"]) if "shown once" in m]
    raw = message.rsplit(" ", 1)[-1]
    assert raw.startswith("sk_")
    assert principal_from_apikey(raw).tenant == tenant.tenant
    key = ApiKey.objects.get(name="ci")
    listing = staff.get("/admin/realtime/apikey/").content.decode()
    assert key.prefix in listing and raw not in listing


def test_revoke_action(staff, tenant):
    key = ApiKey.objects.get(tenant=tenant.tenant, kind="publishable")
    staff.post(
        "/admin/realtime/apikey/",
        {"action": "revoke", "_selected_action": [key.pk]},
    )
    key.refresh_from_db()
    assert key.revoked_at is not None
    log = ActivityLog.objects.get(event_type=EventType.KEY_REVOKED)
    assert log.actor == "staff:ops"


def test_suspend_and_resume_actions_close_sockets(staff, tenant, herald_server):
    ws = Socket(herald_server.ws_url, tenant.secret_key)
    ws.join("room")
    staff.post(
        "/admin/realtime/tenant/",
        {"action": "suspend", "_selected_action": [tenant.tenant.pk]},
    )
    assert (
        ws.recv_until(lambda f: f["event"] == "phx_close")["topic"] == "realtime:room"
    )
    tenant.tenant.refresh_from_db()
    assert not tenant.tenant.is_active
    staff.post(
        "/admin/realtime/tenant/",
        {"action": "resume", "_selected_action": [tenant.tenant.pk]},
    )
    tenant.tenant.refresh_from_db()
    assert tenant.tenant.is_active


def test_disconnect_action_and_filters_on_subscriptions(staff, tenant, herald_server):
    ws = Socket(herald_server.ws_url, tenant.secret_key)
    ws.join("shop", bindings=[{"event": "*", "schema": "public", "table": "orders"}])
    ws.join("other")
    shop = Subscription.objects.get(topic="realtime:shop")
    assert shop.tables == "orders"
    listing = staff.get("/admin/subscriptions/subscription/?table=orders&state=active")
    assert listing.status_code == 200
    assert list(listing.context["cl"].result_list) == [shop]
    staff.post(
        "/admin/subscriptions/subscription/",
        {"action": "disconnect", "_selected_action": [shop.pk]},
    )
    closed = ws.recv_until(lambda f: f["event"] == "phx_close")
    assert closed["topic"] == "realtime:shop"
    ws.close()


def test_the_activity_log_and_the_change_log_are_read_only(staff, tenant):
    log = ActivityLog.objects.filter(tenant=tenant.tenant).first()
    assert staff.get("/admin/audit/activitylog/").status_code == 200
    assert staff.get("/admin/audit/activitylog/add/").status_code == 403
    change = staff.post(f"/admin/audit/activitylog/{log.pk}/delete/", {"post": "yes"})
    assert change.status_code == 403
    assert ActivityLog.objects.filter(pk=log.pk).exists()
    assert staff.get("/admin/realtime/liveupdate/add/").status_code == 403


@pytest.fixture
def notes_table():
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE notes (id serial PRIMARY KEY, body text)")
    yield "notes"
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE notes")


def test_tracking_a_table_starts_and_stops_from_the_admin(staff, tenant, notes_table):
    from django.db import connection

    from realtime.models import LiveUpdate, TrackedTable

    refused = staff.post(
        "/admin/realtime/trackedtable/add/",
        {"db_table": "notes", "tenant_kind": "fixed", "tenant_value": "ghost"},
    )
    assert b"No tenant" in refused.content
    staff.post(
        "/admin/realtime/trackedtable/add/",
        {
            "db_table": "notes",
            "tenant_kind": "fixed",
            "tenant_value": tenant.tenant.slug,
            "exclude": "[]",
        },
    )
    tracked = TrackedTable.objects.get(db_table="notes")
    listing = staff.get("/admin/realtime/trackedtable/").content.decode()
    assert "notes" in listing and "tracked_article" in listing
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO notes (body) VALUES ('hi')")
    assert LiveUpdate.objects.get().record == {"id": 1, "body": "hi"}
    staff.post(
        "/admin/realtime/trackedtable/",
        {"action": "untrack", "_selected_action": [tracked.pk]},
    )
    assert not TrackedTable.objects.filter(db_table="notes").exists()
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO notes (body) VALUES ('unseen')")
    assert LiveUpdate.objects.count() == 1
    events = ActivityLog.objects.filter(target="notes").values_list(
        "event_type", "actor"
    )
    assert sorted(events) == [
        (EventType.TABLE_TRACKED, "staff:ops"),
        (EventType.TABLE_UNTRACKED, "staff:ops"),
    ]


def test_policy_edits_in_the_admin_are_logged(staff, tenant):
    """Adding, changing and deleting policies in the admin leaves activity rows."""
    added = staff.post(
        "/admin/realtime/rowpolicy/add/",
        {
            "tenant": tenant.tenant.pk,
            "table": "articles",
            "role": "authenticated",
            "rules": '[{"column": "site_id", "claim": "site_id"}]',
        },
    )
    assert added.status_code == 302
    policy = RowPolicy.objects.get(tenant=tenant.tenant, table="articles")
    staff.post(
        f"/admin/realtime/rowpolicy/{policy.pk}/change/",
        {
            "tenant": tenant.tenant.pk,
            "table": "articles",
            "role": "authenticated",
            "rules": "[]",
        },
    )
    policy.refresh_from_db()
    assert policy.rules == []
    staff.post(f"/admin/realtime/rowpolicy/{policy.pk}/delete/", {"post": "yes"})
    assert not RowPolicy.objects.filter(pk=policy.pk).exists()

    channel = ChannelPolicy.objects.create(tenant=tenant.tenant, pattern="room:*")
    staff.post(
        "/admin/realtime/channelpolicy/",
        {"action": "delete_selected", "_selected_action": [channel.pk], "post": "yes"},
    )
    assert not ChannelPolicy.objects.filter(pk=channel.pk).exists()

    logged = list(
        ActivityLog.objects.filter(
            event_type__in=[EventType.POLICY_CHANGED, EventType.POLICY_DELETED]
        )
        .order_by("pk")
        .values_list("event_type", "target", "actor")
    )
    assert logged == [
        (EventType.POLICY_CHANGED, "articles", "staff:ops"),
        (EventType.POLICY_CHANGED, "articles", "staff:ops"),
        (EventType.POLICY_DELETED, "articles", "staff:ops"),
        (EventType.POLICY_DELETED, "room:*", "staff:ops"),
    ]


def test_row_policies_are_not_edited_inline_on_the_tenant(staff, tenant):
    """The tenant page shows its row policies but saves none behind the service."""
    RowPolicy.objects.create(tenant=tenant.tenant, table="articles", role="anon")
    page = staff.get(f"/admin/realtime/tenant/{tenant.tenant.pk}/change/")
    assert page.status_code == 200
    assert b"articles" in page.content
    assert b'name="row_policies-0-rules"' not in page.content


def test_private_only_is_shown_and_switched_by_actions(staff, tenant, herald_server):
    listing = staff.get("/admin/realtime/tenant/").content.decode()
    assert "Private only" in listing  # the column, and its filter
    ws = Socket(herald_server.ws_url, tenant.publishable_key)
    ws.join("room")
    staff.post(
        "/admin/realtime/tenant/",
        {"action": "private_channels_only", "_selected_action": [tenant.tenant.pk]},
    )
    ws.recv_until(lambda f: f["event"] == "phx_close")
    tenant.tenant.refresh_from_db()
    assert tenant.tenant.private_only
    again = Socket(herald_server.ws_url, tenant.publishable_key)
    assert again.join("room")["payload"]["response"] == {
        "reason": "PrivateOnly: This project only allows private channels"
    }
    log = ActivityLog.objects.get(event_type=EventType.POLICY_CHANGED)
    assert (log.actor, log.details) == ("staff:ops", {"private_only": True})
    page = staff.get(f"/admin/realtime/tenant/{tenant.tenant.pk}/change/")
    assert "Private only" in page.content.decode()
    staff.post(
        "/admin/realtime/tenant/",
        {"action": "public_channels_too", "_selected_action": [tenant.tenant.pk]},
    )
    tenant.tenant.refresh_from_db()
    assert not tenant.tenant.private_only
    third = Socket(herald_server.ws_url, tenant.publishable_key)
    assert third.join("room")["payload"]["status"] == "ok"
    for socket in (ws, again, third):
        socket.close()


def test_an_auth_callback_added_in_the_admin_shows_its_secret_once(staff, tenant):
    response = staff.post(
        "/admin/realtime/authcallback/add/",
        {
            "tenant": tenant.tenant.pk,
            "url": "https://shop.example.com/herald/auth",
            "timeout": "2",
            "default_ttl": "60",
            "max_ttl": "600",
        },
        follow=True,
    )
    [message] = [m for m in map(str, response.context["messages"]) if "shown once" in m]
    secret = message.rsplit(" ", 1)[-1]
    callback = AuthCallback.objects.get(tenant=tenant.tenant)
    assert secret == callback.secret and secret.startswith("whsec_")
    page = staff.get(f"/admin/realtime/authcallback/{callback.pk}/change/")
    assert secret not in page.content.decode()
    assert ActivityLog.objects.filter(
        event_type=EventType.POLICY_CHANGED, target="auth_callback"
    ).exists()


def test_the_admin_refuses_a_callback_timeout_past_its_bound(staff, tenant):
    response = staff.post(
        "/admin/realtime/authcallback/add/",
        {
            "tenant": tenant.tenant.pk,
            "url": "https://shop.example.com/herald/auth",
            "timeout": "60",
            "default_ttl": "60",
            "max_ttl": "600",
        },
    )
    assert response.status_code == 200  # the form again, with its error
    assert "less than or equal to 10" in response.content.decode()
    assert not AuthCallback.objects.exists()


def test_tenants_are_created_changed_and_rotated_through_the_services(staff, tenant):
    """The admin writes as the API and the commands do: logged, secrets shown once."""
    added = staff.post(
        "/admin/realtime/tenant/add/", {"name": "Bravo", "slug": "bravo"}, follow=True
    )
    assert added.status_code == 200
    bravo = Tenant.objects.get(slug="bravo")
    keys = ApiKey.objects.filter(tenant=bravo)
    assert sorted(keys.values_list("kind", flat=True)) == ["publishable", "secret"]
    assert b"shown once" in added.content
    assert ActivityLog.objects.filter(
        event_type=EventType.TENANT_CREATED, tenant=bravo, actor="staff:ops"
    ).exists()

    page = staff.get(f"/admin/realtime/tenant/{bravo.pk}/change/")
    assert bravo.jwt_secret.encode() not in page.content, "never shown as text"
    form = page.context["adminform"].form
    data = {
        name: form[name].value()
        for name in form.fields
        if form[name].value() is not None
    }
    data.update(
        {
            "max_channels_per_client": 7,
            "keys-TOTAL_FORMS": 0,
            "keys-INITIAL_FORMS": 0,
            "row_policies-TOTAL_FORMS": 0,
            "row_policies-INITIAL_FORMS": 0,
        }
    )
    changed = staff.post(f"/admin/realtime/tenant/{bravo.pk}/change/", data)
    assert changed.status_code == 302, changed.content[:2000]
    bravo.refresh_from_db()
    assert bravo.max_channels_per_client == 7
    update = ActivityLog.objects.get(event_type=EventType.TENANT_UPDATED, tenant=bravo)
    assert update.details["changed"]["max_channels_per_client"][1] == 7

    old_secret = bravo.jwt_secret
    staff.post(
        "/admin/realtime/tenant/",
        {"action": "rotate_jwt_secret", "_selected_action": [bravo.pk]},
    )
    bravo.refresh_from_db()
    assert bravo.jwt_secret != old_secret
    assert ActivityLog.objects.filter(
        event_type=EventType.JWT_SECRET_ROTATED, tenant=bravo
    ).exists()
