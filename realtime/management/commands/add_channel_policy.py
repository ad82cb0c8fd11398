from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from realtime.models import ChannelPolicy, Tenant
from realtime.services.policies import channel_policy_add


class Command(BaseCommand):
    help = "Let a role read and/or write private topics matching a pattern."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", required=True)
        parser.add_argument(
            "--pattern", required=True, help="e.g. 'site:{site_id}' or 'room-*'"
        )
        parser.add_argument("--role", default="", help="blank: any role")
        parser.add_argument(
            "--extension", default="*", choices=ChannelPolicy.Extension.values
        )
        parser.add_argument("--no-read", action="store_true")
        parser.add_argument("--write", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = Tenant.objects.filter(slug=options["tenant"]).first()
        if tenant is None:
            raise CommandError(f"No tenant {options['tenant']!r}")
        try:
            policy = channel_policy_add(
                tenant=tenant,
                pattern=options["pattern"],
                role=options["role"],
                extension=options["extension"],
                read=not options["no_read"],
                write=options["write"],
                actor="cli",
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        self.stdout.write(f"Added channel policy {policy.pk}: {policy}")
