from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from realtime import errors
from realtime.capture.services import table_track


class Command(BaseCommand):
    help = (
        "Record every INSERT/UPDATE/DELETE on TABLE as a change, whatever writes "
        "it (triggers). Idempotent: run it again after adding columns on SQLite."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("table")
        tenant = parser.add_mutually_exclusive_group(required=True)
        tenant.add_argument("--tenant", help="The tenant (slug) of every row.")
        tenant.add_argument(
            "--tenant-column", help="The column holding each row's tenant slug."
        )
        parser.add_argument("--exclude", action="append", default=[], metavar="COLUMN")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            tracked = table_track(
                db_table=options["table"],
                tenant_slug=options["tenant"],
                tenant_column=options["tenant_column"],
                exclude=options["exclude"],
                actor="cli",
            )
        except errors.InvalidInput as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"Tracking {tracked.db_table}")
