"""Used by `make run`: a demo tenant, its keys, and a snippet to paste."""

import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from realtime.models import ApiKey, Tenant
from realtime.services.tenants import api_key_create, row_policy_add, tenant_create

SLUG = "demo"

SNIPPET = """\
Publish a change (secret key):
  curl -s -X POST {url}/api/live-updates \\
    -H 'apikey: {secret_key}' -H 'Content-Type: application/json' \\
    -d '{{"site_id": 42, "event_type": "content.published",
         "collection": "posts", "item_id": 7}}'

Listen from Node (publishable key; README, "Listening", has the Python one):
  import {{ createClient }} from '@supabase/supabase-js'
  import WebSocket from 'ws' // Node 20 only: browsers and Node 22+ leave this out
  const supabase = createClient('{url}', '{publishable_key}',
    {{ realtime: {{ transport: WebSocket }} }})
  supabase.channel('site-42')
    .on('postgres_changes', {{ event: 'INSERT', schema: 'public', table: 'live_updates',
                              filter: 'site_id=eq.42' }}, (p) => console.log(p.new))
    .subscribe()
"""


class Command(BaseCommand):
    help = "Create the demo tenant if there is none, and print its keys."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", default="http://127.0.0.1:8000")

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(settings.BASE_DIR) / "var" / "demo-keys.json"
        keys = self._keys(path)
        self.stdout.write(f"Demo tenant {SLUG!r} (keys kept in {path}):")
        for label, value in keys.items():
            self.stdout.write(f"  {label:16} {value}")
        self.stdout.write("")
        self.stdout.write(SNIPPET.format(url=options["url"], **keys))

    def _keys(self, path: Path) -> dict[str, str]:
        tenant = Tenant.objects.filter(slug=SLUG).first()
        if tenant is not None and path.exists():
            return json.loads(path.read_text())
        with transaction.atomic():
            keys = self._fresh_keys(tenant)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(keys, indent=2))
        path.chmod(0o600)
        return keys

    def _fresh_keys(self, tenant: Tenant | None) -> dict[str, str]:
        if tenant is None:
            creds = tenant_create(name="Demo", slug=SLUG, actor="make run")
            # The demo's anon clients may see every content event.
            row_policy_add(
                tenant=creds.tenant,
                table="live_updates",
                role="anon",
                rules=[],
                actor="make run",
            )
            return {
                "publishable_key": creds.publishable_key,
                "secret_key": creds.secret_key,
            }
        # The tenant exists but its keys were not kept here: they are only ever
        # shown once, so issue a new pair.
        _, pk = api_key_create(
            tenant=tenant, kind=ApiKey.Kind.PUBLISHABLE, actor="make run"
        )
        _, sk = api_key_create(tenant=tenant, kind=ApiKey.Kind.SECRET, actor="make run")
        return {"publishable_key": pk, "secret_key": sk}
