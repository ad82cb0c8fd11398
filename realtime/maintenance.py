"""The maintenance worker's steps: `manage.py realtime_maintenance` runs them.

Each step is a function taking no arguments and returning how much it did. Add
a step by appending it to `steps()`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)

Step = tuple[str, Callable[[], int]]


def steps() -> list[Step]:
    # Imported here: the steps live in apps that import this one.
    from realtime.capture.skipped import skipped_check
    from realtime.services.retention import (
        activity_expire,
        changes_expire,
        messages_expire,
    )
    from subscriptions.services import subscriptions_sweep
    from subscriptions.webhooks import webhooks_deliver

    return [
        ("webhooks", webhooks_deliver),
        ("stale", subscriptions_sweep),
        ("retention", changes_expire),
        ("activity", activity_expire),
        ("messages", messages_expire),
        ("skipped", skipped_check),
    ]


def maintenance_run(*, only: set[str] | None = None) -> dict[str, int]:
    """One pass of every step; a failing step is logged and the others still run."""
    done: dict[str, int] = {}
    for name, step in steps():
        if only is not None and name not in only:
            continue
        try:
            done[name] = step()
        except Exception:  # a process boundary: the worker must keep going
            logger.exception("Maintenance step %s failed", name)
            done[name] = -1
    return done
