"""Publishes the load generator's changes straight to the channel layer.

`make bench` isolates fan-out from the database this way (`--publish layer`,
the default): each line on stdin is a JSON list of records for the table given
on the command line, or `{"table": ..., "records": [...]}`: one publish; each
record becomes an unsaved change, and the line's changes are sent together with
`realtime.layer.changes_send`, the very messages the on-commit hook of a REST
publish sends; every line is acknowledged on stdout.
It stops when stdin closes (the load generator exits).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django

django.setup()

import orjson  # noqa: E402
from django.utils import timezone  # noqa: E402

from realtime.columns import columns_infer  # noqa: E402
from realtime.layer import changes_send  # noqa: E402
from realtime.models import LiveUpdate, Tenant  # noqa: E402


def main(slug: str, default_table: str) -> None:
    tenant = Tenant.objects.get(slug=slug)
    for line in sys.stdin:
        batch = orjson.loads(line)
        table = default_table
        if isinstance(batch, dict):
            table, batch = batch["table"], batch["records"]
        updates = [
            # The record's bench_n stands in for the change-log id (the cursor).
            LiveUpdate(
                pk=record["bench_n"] + 1,
                tenant=tenant,
                table=table,
                type=LiveUpdate.Type.INSERT,
                record=record,
                columns=columns_infer(record),
                commit_timestamp=timezone.now(),
            )
            for record in batch
        ]
        changes_send(updates)
        sys.stdout.write("ok\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main(*sys.argv[1:3])
