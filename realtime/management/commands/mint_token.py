from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from realtime.auth import token_mint
from realtime.models import Tenant


def parse_claim(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise CommandError(f"--claim takes KEY=VALUE, not {text!r}")
    return key, value


class Command(BaseCommand):
    help = "Print a user token (JWT) signed with the tenant's secret."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", required=True, help="tenant slug")
        parser.add_argument("--role", default="authenticated")
        parser.add_argument("--sub", default=None)
        parser.add_argument("--claim", action="append", default=[], metavar="K=V")
        parser.add_argument("--ttl", type=int, default=settings.HERALD_TOKEN_TTL)

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = Tenant.objects.filter(slug=options["tenant"]).first()
        if tenant is None:
            raise CommandError(f"No tenant {options['tenant']!r}")
        if options["ttl"] <= 0:
            raise CommandError("--ttl must be positive")
        claims = dict(parse_claim(c) for c in options["claim"])
        self.stdout.write(
            token_mint(
                tenant=tenant,
                role=options["role"],
                sub=options["sub"],
                claims=claims,
                ttl=options["ttl"],
            )
        )
