"""The OpenAPI schema: served, complete, and true to a live server (schemathesis)."""

import subprocess
import sys

import httpx
import pytest
from django.contrib.staticfiles import finders

from realtime.models import Tenant
from realtime.services.tenants import row_policy_add
from subscriptions.models import ChannelDefinition, DurableSubscription

OPERATIONS = {
    ("get", "/api/live-updates"),
    ("post", "/api/live-updates"),
    ("post", "/api/changes"),
    ("post", "/api/tokens"),
    ("get", "/api/activity"),
    ("post", "/api/realtime/subscribe"),
    ("post", "/api/realtime/unsubscribe"),
    ("get", "/api/realtime/status"),
    ("get", "/api/realtime/subscriptions/{subscription_id}/changes"),
    ("post", "/realtime/v1/api/broadcast"),
    ("post", "/realtime/v1/api/broadcast/{topic}/events/{event}"),
}
# Generous limits for the fuzzing tenant: schemathesis calls subscribe far more
# than 10 times a minute.
FUZZ_LIMITS = {
    scope: "100000/m"
    for scope in ("default", "read", "publish", "subscribe", "tokens", "broadcast")
}
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)


@pytest.fixture
def schema(client, db):
    response = client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return response.json()


def test_schema_documents_every_endpoint(schema):
    assert schema["openapi"].startswith("3.")
    operations = {
        (method, path)
        for path, methods in schema["paths"].items()
        for method in methods
        if path != "/api/schema/"
    }
    assert operations == OPERATIONS
    assert schema["components"]["securitySchemes"]["apikey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "apikey",
        "description": schema["components"]["securitySchemes"]["apikey"]["description"],
    }
    for method, path in OPERATIONS:
        operation = schema["paths"][path][method]
        assert operation["security"] == [{"apikey": []}], (method, path)
        responses = operation["responses"]
        assert "Retry-After" in responses["429"]["headers"]
        for status in ("400", "401", "403", "429"):
            error = responses[status]["content"]["application/json"]["schema"]
            assert error == {"$ref": "#/components/schemas/Error"}
        if method == "post":
            assert "requestBody" in operation, (method, path)
    assert schema["components"]["schemas"]["Error"]["required"] == ["error", "message"]


def test_interactive_docs_are_served_without_a_cdn(client, db):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger-ui" in html and "/api/schema/" in html
    assert "cdn." not in html and "unpkg" not in html
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in html
    assert finders.find("drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")


@pytest.mark.django_db(transaction=True)
def test_schemathesis_finds_no_server_error_and_no_drift(
    make_tenant, herald_server, tmp_path
):
    creds = make_tenant("Fuzz")
    Tenant.objects.filter(pk=creds.tenant.pk).update(rate_limits=FUZZ_LIMITS)
    ChannelDefinition.objects.create(
        tenant=creds.tenant, name="orders", table="orders", filter_column="site_id"
    )
    row_policy_add(tenant=creds.tenant, table="orders", role="authenticated", rules=[])
    # A subscription of the fuzzing key, so polling reaches past "not found".
    polled = DurableSubscription.objects.create(
        tenant=creds.tenant, role="service_role", channel="orders", table="orders"
    )
    config = tmp_path / "schemathesis.toml"
    config.write_text(f'[parameters]\n"path.subscription_id" = {polled.pk}\n')
    polled_url = f"{herald_server.url}/api/realtime/subscriptions/{polled.pk}/changes"
    ready = httpx.get(polled_url, headers={"apikey": creds.secret_key})
    assert ready.status_code == 200, ready.text
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from schemathesis.cli import schemathesis; schemathesis()",
            "--config-file",
            str(config),
            "run",
            f"{herald_server.url}/api/schema/?format=json",
            "--url",
            herald_server.url,
            "--header",
            f"apikey: {creds.secret_key}",
            "--checks",
            CHECKS,
            "--max-examples",
            "25",
            "--phases",
            "examples,coverage,fuzzing",
            "--seed",
            "20261121",
            "--request-timeout",
            "10",
            "--no-shrink",
            "--workers",
            "2",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,  # schemathesis keeps a cache folder where it runs
    )
    print(result.stdout[-20000:])
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
