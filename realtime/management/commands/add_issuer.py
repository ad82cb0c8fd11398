from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from realtime.models import Tenant
from realtime.services.issuers import trusted_issuer_add


class Command(BaseCommand):
    help = "Trust an issuer's tokens for a tenant (JWKS URL, keys file or HS secret)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", required=True, help="tenant slug")
        parser.add_argument("--issuer", required=True, help="the tokens' `iss`")
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--jwks-url", default="")
        source.add_argument("--jwks-file", default="", help="a JWKS or PEM keys")
        source.add_argument("--hs-secret", default="")
        parser.add_argument("--audience", default="")
        parser.add_argument("--algorithms", default="", help="e.g. ES256,RS256")
        parser.add_argument("--leeway", type=int, default=0, help="seconds")
        parser.add_argument("--sub-claim", default="sub")
        parser.add_argument("--role-claim", default="role")
        parser.add_argument("--default-role", default="")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = Tenant.objects.filter(slug=options["tenant"]).first()
        if tenant is None:
            raise CommandError(f"No tenant {options['tenant']!r}")
        static_keys = ""
        if options["jwks_file"]:
            try:
                static_keys = Path(options["jwks_file"]).read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raise CommandError(f"Cannot read the keys file: {exc}") from exc
        algorithms = [a.strip() for a in options["algorithms"].split(",") if a.strip()]
        try:
            issuer = trusted_issuer_add(
                tenant=tenant,
                issuer=options["issuer"],
                jwks_url=options["jwks_url"],
                static_keys=static_keys,
                hs_secret=options["hs_secret"],
                algorithms=algorithms,
                audience=options["audience"],
                leeway=options["leeway"],
                sub_claim=options["sub_claim"],
                role_claim=options["role_claim"],
                default_role=options["default_role"],
                actor="cli",
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        self.stdout.write(
            f"Added issuer {issuer.pk}: {issuer} ({', '.join(issuer.algorithms)})"
        )
