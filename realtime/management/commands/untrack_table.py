from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from realtime.capture.services import table_untrack


class Command(BaseCommand):
    help = "Stop recording changes of TABLE (drops its capture triggers)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("table")

    def handle(self, *args: Any, **options: Any) -> None:
        if table_untrack(db_table=options["table"], actor="cli"):
            self.stdout.write(f"No longer tracking {options['table']}")
        else:
            self.stdout.write(f"{options['table']} was not tracked")
