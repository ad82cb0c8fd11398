from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from realtime.models import Tenant
from realtime.services.tenants import row_policy_add


def parse_match(text: str, *, any_of: bool = False) -> dict[str, Any]:
    column, sep, claim = text.partition("=")
    option = "--match-any" if any_of else "--match"
    if not sep or not column or not claim:
        raise CommandError(f"{option} takes COLUMN=CLAIM, not {text!r}")
    rule: dict[str, Any] = {"column": column, "claim": claim}
    if any_of:
        rule["any"] = True
    return rule


class Command(BaseCommand):
    help = (
        "Let ROLE see rows of TABLE where each COLUMN equals the token's CLAIM "
        "(--match) or is one of the values of its list CLAIM (--match-any)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", required=True)
        parser.add_argument("--table", required=True)
        parser.add_argument("--role", required=True)
        parser.add_argument(
            "--match", action="append", default=[], metavar="COLUMN=CLAIM"
        )
        parser.add_argument(
            "--match-any", action="append", default=[], metavar="COLUMN=CLAIM"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = Tenant.objects.filter(slug=options["tenant"]).first()
        if tenant is None:
            raise CommandError(f"No tenant {options['tenant']!r}")
        try:
            policy = row_policy_add(
                tenant=tenant,
                table=options["table"],
                role=options["role"],
                rules=[parse_match(m) for m in options["match"]]
                + [parse_match(m, any_of=True) for m in options["match_any"]],
                actor="cli",
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        self.stdout.write(f"Added row policy {policy.pk}: {policy}")
