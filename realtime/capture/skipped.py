"""Rows of tracked tables that named no known tenant: counted, shown, logged.

The triggers never fail a writer for such a row (README, "Capturing changes"):
they skip it and add one to its table's `TrackedTable.skipped`. This module
makes that count visible to operators: `herald_capture_skipped_rows_total`
in `/metrics`, read from the database at scrape time (so every process shows
the same figure), and a warning each time a table's count has grown since
this process last looked (a maintenance step, and every scrape).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from django.db import DatabaseError
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from realtime.models import TrackedTable

logger = logging.getLogger(__name__)

# What this process last saw, per table: a warning is for growth since then.
_seen: dict[str, int] = {}


def skipped_counts() -> dict[str, int]:
    """Rows skipped so far, per tracked table (its db_table)."""
    return dict(TrackedTable.objects.values_list("db_table", "skipped"))


def skipped_check(counts: dict[str, int] | None = None) -> int:
    """Log a warning for each table whose skipped count grew; how many grew.

    A process's first look warns about every table with skipped rows, so
    a worker or server started after the fact still says so once.
    """
    counts = skipped_counts() if counts is None else counts
    grown = 0
    for table, skipped in sorted(counts.items()):
        before = _seen.get(table, 0)
        if skipped < before:  # tracked again since: its count started over
            before = 0
        if skipped > before:
            grown += 1
            logger.warning(
                "Capture skipped %d row(s) of %s naming no known tenant "
                "(%d in all): the writes succeeded but no change was recorded",
                skipped - before,
                table,
                skipped,
            )
        _seen[table] = skipped
    return grown


class SkippedRowsCollector(Collector):
    """`herald_capture_skipped_rows_total{table=…}` from the database."""

    def describe(self) -> Iterator[CounterMetricFamily]:
        # Without it, registering calls collect(): a query at import time.
        yield CounterMetricFamily(
            "herald_capture_skipped_rows",
            "Rows naming no known tenant",
            labels=["table"],
        )

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "herald_capture_skipped_rows",
            "Rows written to tracked tables that named no known tenant: "
            "the write succeeded, no change was recorded",
            labels=["table"],
        )
        try:
            counts = skipped_counts()
        except DatabaseError:
            logger.warning("Could not read skipped capture rows for /metrics")
            counts = {}
        skipped_check(counts)
        for table, skipped in sorted(counts.items()):
            family.add_metric([table], skipped)
        yield family
