import json
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from realtime.services.tenants import tenant_create


class Command(BaseCommand):
    help = "Create a tenant with a publishable and a secret key (shown once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--slug", help="URL-safe id; derived from NAME if absent")
        parser.add_argument("--json", action="store_true", help="print JSON only")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            creds = tenant_create(
                name=options["name"], slug=options["slug"], actor="cli"
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        out = {
            "tenant": creds.tenant.slug,
            "publishable_key": creds.publishable_key,
            "secret_key": creds.secret_key,
            "jwt_secret": creds.tenant.jwt_secret,
        }
        if options["json"]:
            self.stdout.write(json.dumps(out))
            return
        for label, value in out.items():
            self.stdout.write(f"{label:16} {value}")
        self.stdout.write("The keys are shown once; store them now.")
