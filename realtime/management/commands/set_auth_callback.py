from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from realtime.models import AuthCallback, Tenant
from realtime.services.auth_callbacks import auth_callback_remove, auth_callback_set


class Command(BaseCommand):
    help = (
        "Set a tenant's authorization callback (README, Authorization callback). "
        "The signing secret is printed once, when made or rotated."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", required=True, help="tenant slug")
        action = parser.add_mutually_exclusive_group(required=True)
        action.add_argument("--url", help="http(s) URL Herald POSTs to")
        action.add_argument("--remove", action="store_true")
        parser.add_argument(
            "--on-join", action="store_true", help="also ask on private joins"
        )
        parser.add_argument("--timeout", type=float, default=2.0, help="seconds")
        parser.add_argument("--default-ttl", type=int, default=60, help="seconds")
        parser.add_argument("--max-ttl", type=int, default=600, help="seconds")
        parser.add_argument("--rotate-secret", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = Tenant.objects.filter(slug=options["tenant"]).first()
        if tenant is None:
            raise CommandError(f"No tenant {options['tenant']!r}")
        if options["remove"]:
            callback = AuthCallback.objects.filter(tenant=tenant).first()
            if callback is None:
                raise CommandError(f"{tenant.slug} has no authorization callback")
            auth_callback_remove(callback=callback, actor="cli")
            self.stdout.write(f"Removed the authorization callback of {tenant.slug}")
            return
        try:
            callback, secret = auth_callback_set(
                tenant=tenant,
                url=options["url"],
                on_join=options["on_join"],
                timeout=options["timeout"],
                default_ttl=options["default_ttl"],
                max_ttl=options["max_ttl"],
                rotate_secret=options["rotate_secret"],
                actor="cli",
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        when = "connect and private joins" if callback.on_join else "connect"
        self.stdout.write(f"Callback of {tenant.slug}: {callback.url} (on {when})")
        if secret is not None:
            self.stdout.write(f"Signing secret (shown once): {secret}")
