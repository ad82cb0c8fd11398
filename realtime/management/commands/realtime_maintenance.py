import signal
import time
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections

from realtime.maintenance import maintenance_run, steps


class Command(BaseCommand):
    help = "Run the maintenance steps (webhook delivery, …) once, or in a loop."

    def add_arguments(self, parser: CommandParser) -> None:
        mode = parser.add_mutually_exclusive_group(required=True)
        mode.add_argument("--once", action="store_true", help="one pass, then exit")
        mode.add_argument("--loop", action="store_true", help="until SIGTERM/SIGINT")
        parser.add_argument(
            "--interval",
            type=float,
            default=settings.HERALD_MAINTENANCE_INTERVAL,
            help="seconds between passes with --loop",
        )
        parser.add_argument(
            "--step",
            action="append",
            choices=[name for name, _ in steps()],
            help="only this step (repeatable)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        only = set(options["step"]) if options["step"] else None
        if options["once"]:
            self._report(maintenance_run(only=only))
            return
        stopping = False

        def stop(signum: int, frame: FrameType | None) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        while not stopping:
            close_old_connections()
            done = maintenance_run(only=only)
            if any(done.values()):
                self._report(done)
            # A pass that did work is followed at once: there may be more.
            if not any(n > 0 for n in done.values()):
                time.sleep(options["interval"])

    def _report(self, done: dict[str, int]) -> None:
        self.stdout.write(" ".join(f"{name}={n}" for name, n in done.items()))
