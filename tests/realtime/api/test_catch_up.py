"""GET /api/live-updates: what a reconnecting client recovers, and never sees."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from realtime.auth import token_mint
from realtime.models import LiveUpdate, Tenant
from realtime.services.changes import ChangeInput, live_updates_record
from realtime.services.retention import live_updates_expire
from realtime.services.tenants import row_policy_add

pytestmark = pytest.mark.django_db(transaction=True)


def publish(creds, table, type="INSERT", **record):
    old = dict(record) if type != "INSERT" else None
    change = ChangeInput(
        table=table,
        type=type,
        record=None if type == "DELETE" else record,
        old_record=old,
    )
    return live_updates_record(tenant=creds.tenant, changes=[change])[0].pk


def user(creds, site_id, sub="user-1"):
    return token_mint(
        tenant=creds.tenant,
        role="authenticated",
        sub=sub,
        claims={"site_id": site_id},
        ttl=300,
    )


def catch_up(api, creds, token=None, **params):
    headers = {"HTTP_APIKEY": creds.publishable_key}
    if token:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return api.get("/api/live-updates", params, **headers)


def catch_up_all(api, creds, token, since, limit):
    """Follow next_cursor page by page, as a client would."""
    seen, pages = [], 0
    while True:
        body = catch_up(api, creds, token, since=since, limit=limit).json()
        seen += body["changes"]
        pages += 1
        since = body["next_cursor"]
        if not body["has_more"]:
            return seen, pages, since


@pytest.fixture
def site_policies(tenant):
    for table in ("live_updates", "orders"):
        row_policy_add(
            tenant=tenant.tenant,
            table=table,
            role="authenticated",
            rules=[{"column": "site_id", "claim": "site_id"}],
        )
    return tenant


def test_reconnecting_client_gets_exactly_the_changes_it_missed(api, site_policies):
    tenant = site_policies
    last_seen = publish(tenant, "orders", id=1, site_id=1)
    missed = [
        publish(tenant, "orders", id=2, site_id=1),
        publish(tenant, "live_updates", id=3, site_id=1),
    ]
    publish(tenant, "orders", id=4, site_id=2)  # another site
    publish(tenant, "notes", id=5, site_id=1)  # a table with no policy
    missed.append(publish(tenant, "orders", "UPDATE", id=2, site_id=1, s="paid"))
    missed.append(publish(tenant, "orders", "DELETE", id=1, site_id=1))
    publish(tenant, "orders", "DELETE", id=4, site_id=2)  # judged on old_record

    response = catch_up(api, tenant, user(tenant, 1), since=last_seen)

    assert response.status_code == 200, response.content
    body = response.json()
    assert [c["seq"] for c in body["changes"]] == missed
    assert [(c["table"], c["type"]) for c in body["changes"]] == [
        ("orders", "INSERT"),
        ("live_updates", "INSERT"),
        ("orders", "UPDATE"),
        ("orders", "DELETE"),
    ]
    first = body["changes"][0]
    assert first["record"] == {"id": 2, "site_id": 1}
    assert first["schema"] == "public" and first["commit_timestamp"].endswith("Z")
    assert "record" not in body["changes"][3]
    assert body["changes"][3]["old_record"] == {"id": 1, "site_id": 1}
    assert body["has_more"] is False
    assert body["next_cursor"] == LiveUpdate.objects.latest("pk").pk


def test_paging_follows_next_cursor_without_gaps_or_repeats(api, site_policies):
    tenant = site_policies
    visible = []
    for i in range(7):
        visible.append(publish(tenant, "orders", id=i, site_id=1))
        publish(tenant, "orders", id=100 + i, site_id=2)
    seen, pages, _ = catch_up_all(api, tenant, user(tenant, 1), since=0, limit=2)
    assert [c["seq"] for c in seen] == visible
    assert pages == 4  # 2 + 2 + 2 + 1


def test_table_parameter_narrows_to_one_table(api, site_policies):
    tenant = site_policies
    publish(tenant, "orders", id=1, site_id=1)
    update = publish(tenant, "live_updates", id=2, site_id=1)
    body = catch_up(api, tenant, user(tenant, 1), table="live_updates").json()
    assert [c["seq"] for c in body["changes"]] == [update]


def test_other_tenants_rows_never_appear(api, make_tenant):
    mine, theirs = make_tenant("Mine"), make_tenant("Theirs")
    for creds in (mine, theirs):
        row_policy_add(
            tenant=creds.tenant,
            table="orders",
            role="authenticated",
            rules=[{"column": "site_id", "claim": "site_id"}],
        )
    publish(theirs, "orders", id=1, site_id=1)
    own = publish(mine, "orders", id=2, site_id=1)
    publish(theirs, "orders", id=3, site_id=1)
    as_user = catch_up(api, mine, user(mine, 1)).json()
    assert [c["seq"] for c in as_user["changes"]] == [own]
    as_service = api.get("/api/live-updates", HTTP_APIKEY=mine.secret_key).json()
    assert [c["seq"] for c in as_service["changes"]] == [own]


def test_an_update_shows_its_old_row_only_to_who_may_see_it(api, site_policies):
    """A row moved from site 99 to site 42: site 42 gets the change with the
    old row cut to its id (what Supabase sends of an old row it may not show),
    site 99 gets nothing, the secret key gets it whole."""
    tenant = site_policies
    moved_old = {"id": 1, "site_id": 99, "title": "secret"}
    kept_old = {"id": 2, "site_id": 42, "title": "old"}
    moved, kept = live_updates_record(
        tenant=tenant.tenant,
        changes=[
            ChangeInput(
                table="orders",
                type="UPDATE",
                record={"id": 1, "site_id": 42, "title": "new"},
                old_record=moved_old,
            ),
            ChangeInput(
                table="orders",
                type="UPDATE",
                record={"id": 2, "site_id": 42, "title": "new"},
                old_record=kept_old,
            ),
        ],
    )

    site_42 = catch_up(api, tenant, user(tenant, 42))
    assert b"secret" not in site_42.content
    assert [(c["seq"], c["old_record"]) for c in site_42.json()["changes"]] == [
        (moved.pk, {"id": 1}),
        (kept.pk, kept_old),
    ]
    assert site_42.json()["changes"][0]["record"]["title"] == "new"
    assert catch_up(api, tenant, user(tenant, 99)).json()["changes"] == []
    service = api.get("/api/live-updates", HTTP_APIKEY=tenant.secret_key).json()
    assert [c["old_record"] for c in service["changes"]] == [moved_old, kept_old]


def test_a_token_of_another_tenant_is_refused(api, make_tenant):
    mine, theirs = make_tenant("Mine"), make_tenant("Theirs")
    response = catch_up(api, mine, user(theirs, 1))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token_signature"


def test_a_principal_that_may_see_nothing_gets_nothing_and_scans_nothing(api, tenant):
    for i in range(20):
        publish(tenant, "orders", id=i, site_id=1)
    with CaptureQueriesContext(connection) as queries:
        response = api.get("/api/live-updates", HTTP_APIKEY=tenant.publishable_key)
    assert response.json() == {"changes": [], "next_cursor": 0, "has_more": False}
    assert not [q for q in queries if '"realtime_liveupdate"' in q["sql"]]


@override_settings(HERALD_CATCH_UP_MAX_SCAN=5)
def test_scanning_is_bounded_and_the_cursor_still_moves_on(api, site_policies):
    tenant = site_policies
    for i in range(12):
        publish(tenant, "orders", id=i, site_id=2)  # invisible to site 1
    wanted = publish(tenant, "orders", id=99, site_id=1)
    token = user(tenant, 1)
    first = catch_up(api, tenant, token, since=0).json()
    assert first["changes"] == [] and first["has_more"] is True
    assert first["next_cursor"] > 0  # five rows read, none visible
    seen, pages, _ = catch_up_all(api, tenant, token, since=0, limit=100)
    assert [c["seq"] for c in seen] == [wanted]
    assert pages == 3  # 13 rows, at most 5 read per request


def test_a_cursor_older_than_retention_is_gone_and_says_reload(api, tenant):
    old = [publish(tenant, "orders", id=i) for i in range(3)]
    LiveUpdate.objects.filter(pk__in=old).update(
        commit_timestamp=timezone.now() - timedelta(days=30)
    )
    recent = publish(tenant, "orders", id=9)
    assert live_updates_expire(tenant=tenant.tenant) == 3

    gone = api.get("/api/live-updates?since=0", HTTP_APIKEY=tenant.secret_key)
    assert gone.status_code == 410
    assert gone.json()["error"] == "cursor_gone"
    assert "reload" in gone.json()["message"]
    still_gone = api.get(
        f"/api/live-updates?since={old[1]}", HTTP_APIKEY=tenant.secret_key
    )
    assert still_gone.status_code == 410
    fine = api.get(f"/api/live-updates?since={old[-1]}", HTTP_APIKEY=tenant.secret_key)
    assert fine.status_code == 200
    assert [c["seq"] for c in fine.json()["changes"]] == [recent]


def test_a_new_tenant_at_cursor_zero_is_not_gone(api, make_tenant, tenant):
    # Another tenant's retention leaves this one's catch-up alone.
    publish(tenant, "orders", id=1)
    LiveUpdate.objects.update(commit_timestamp=timezone.now() - timedelta(days=30))
    live_updates_expire(tenant=tenant.tenant)
    fresh = make_tenant("Fresh")
    response = api.get("/api/live-updates?since=0", HTTP_APIKEY=fresh.secret_key)
    assert response.status_code == 200
    assert response.json()["changes"] == []
    assert Tenant.objects.get(pk=fresh.tenant.pk).changes_pruned_through == 0


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("since=-1", "since: "),
        ("since=abc", "since: "),
        ("limit=0", "limit: "),
        ("limit=100000", "limit: "),
        ("table=a.b", "table: "),
    ],
)
def test_bad_parameters_are_refused(api, tenant, query, message):
    response = api.get(f"/api/live-updates?{query}", HTTP_APIKEY=tenant.secret_key)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid"
    assert response.json()["message"].startswith(message)


def test_catch_up_needs_a_key(api):
    response = api.get("/api/live-updates")
    assert response.status_code == 401
    assert response.json()["error"] == "missing_api_key"
