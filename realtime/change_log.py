"""Reading the change log: catch-up, polling, webhooks and the relay read it one way.

Changes come in log order, filtered by the same binding matcher and row-policy
check the sockets use (realtime.bindings, realtime.row_policy), an UPDATE's old
row cut as the sockets cut it.

Log order. Ids come from a sequence when rows are inserted, but transactions
commit in any order: a reader at id 10 could miss 9 committing after 10.
SQLite serializes writers, so there ids commit in order and the log order is
the id. On PostgreSQL each row records the transaction that wrote it (the
`xid` column, DEFAULT pg_current_xact_id(): migration 0009), and readers only
read rows of transactions older than every transaction still running
(pg_snapshot_xmin of the current snapshot), in (xid, id) order. Every such
transaction has ended, so no row can ever appear before a position already
read: reading "after position P" never skips a change, and no writer waits
for another (a per-tenant lock held until commit did that before).

The cost: a transaction that has written anything and stays open (anywhere on
the server, in any database table) holds the horizon back, and delays the
delivery of every change committed after it began, until it ends.

The cursor on the wire stays the change id (`seq`); its position is looked up
from its row. A cursor whose row is gone (retention deletes every row of the
tenant up to a cursor, `cursor_check`) or was never the tenant's is read as
id order: the changes with a higher id follow it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import QuerySet
from django.db.models.expressions import RawSQL

from realtime import errors
from realtime.bindings import Binding, binding_matches, project_change
from realtime.models import HeraldMessage, LiveUpdate, RowPolicy, Tenant
from realtime.row_policy import (
    SERVICE_ROLE,
    old_row_visible,
    redacted_old_record,
    row_visible,
)
from realtime.selectors import Rules, row_policy_rules

# Rows fetched per query while scanning; a request reads at most max_scan rows.
PAGE_ROWS = 500

# Transactions below this have all ended (PostgreSQL): the readable horizon.
HORIZON = "pg_snapshot_xmin(pg_current_snapshot())"
LOG = LiveUpdate._meta.db_table
XID_SQL = f'"{LOG}"."xid"::text::bigint'

# A position in the log: (transaction id, row id); (0, id) on SQLite.
Position = tuple[int, int]


def ordered_by_commit() -> bool:
    """Whether rows carry their transaction id (PostgreSQL) or ids commit in order."""
    return connection.vendor == "postgresql"


def in_log_order(rows: QuerySet[LiveUpdate]) -> QuerySet[LiveUpdate]:
    """Rows readable now, in log order, each with its position's `log_xid`."""
    if not ordered_by_commit():
        return rows.order_by("pk")
    return (
        # Constant SQL: no input reaches it.
        rows.annotate(log_xid=RawSQL(XID_SQL, ()))  # noqa: S611
        .extra(where=[f'"{LOG}"."xid" < {HORIZON}'])  # noqa: S610
        .order_by(RawSQL(f'"{LOG}"."xid"', ()).asc(), "pk")  # noqa: S611
    )


def after_position(
    rows: QuerySet[LiveUpdate], position: Position
) -> QuerySet[LiveUpdate]:
    """Rows (from in_log_order) after `position`."""
    xid, pk = position
    if not ordered_by_commit():
        return rows.filter(pk__gt=pk)
    return rows.extra(  # noqa: S610 - constant SQL, the position as parameters
        where=[f'("{LOG}"."xid", "{LOG}"."id") > (%s::text::xid8, %s)'],
        params=[str(xid), pk],
    )


def position_of(update: LiveUpdate | HeraldMessage) -> Position:
    """A row's place in log order (its `log_xid` is read with it, PostgreSQL)."""
    return (getattr(update, "log_xid", 0) or 0, update.pk)


def cursor_position(*, tenant_id: int, cursor: int) -> Position:
    """Where the tenant's cursor stands in log order (see the module docstring)."""
    if not ordered_by_commit() or cursor <= 0:
        return (0, cursor)
    xid = (
        LiveUpdate.objects.filter(tenant_id=tenant_id, pk=cursor)
        .annotate(log_xid=RawSQL(XID_SQL, ()))  # noqa: S611
        .values_list("log_xid", flat=True)
        .first()
    )
    return (xid or 0, cursor)


def cursor_later(*, tenant_id: int, cursor: int, than: int) -> bool:
    """Whether `cursor` comes after `than` in the tenant's log order."""
    if cursor == than:
        return False
    return cursor_position(tenant_id=tenant_id, cursor=cursor) > cursor_position(
        tenant_id=tenant_id, cursor=than
    )


@dataclass(frozen=True, slots=True)
class Reader:
    """Whose eyes: the role and claims the row policies are evaluated with."""

    tenant_id: int
    role: str
    claims: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ChangePage:
    """Visible changes after a cursor, and where to continue from.

    Each is as its reader may see it: an UPDATE whose old row the reader may
    not see carries `redacted_old_record` (realtime.row_policy) instead.
    """

    changes: list[LiveUpdate]
    next_cursor: int
    has_more: bool


def cursor_check(*, tenant: Tenant, cursor: int) -> None:
    """Refuse a cursor after which retention deleted changes: the client must reload.

    `changes_pruned_through` is the highest cursor retention deleted, so any
    cursor below it has lost at least that change. A new tenant (0) never has.
    """
    pruned = (
        Tenant.objects.filter(pk=tenant.pk)
        .values_list("changes_pruned_through", flat=True)
        .first()
    )
    if pruned and cursor < pruned:
        raise errors.CursorGone(
            f"Changes after cursor {cursor} were deleted by retention (the oldest "
            f"retained cursor is above {pruned}): reload the data, then continue "
            "from the cursor of the latest change"
        )


def visible_tables(*, reader: Reader) -> list[str] | None:
    """Tables the reader may see any row of (None: every table, service_role)."""
    if reader.role == SERVICE_ROLE:
        return None
    return list(
        RowPolicy.objects.filter(tenant_id=reader.tenant_id, role=reader.role)
        .values_list("table", flat=True)
        .distinct()
    )


def changes_after(
    *,
    reader: Reader,
    after: int,
    limit: int,
    tables: Collection[str] | None = None,
    binding: Binding | None = None,
    max_scan: int | None = None,
) -> ChangePage:
    """Up to `limit` changes after cursor `after` the reader may see, in log order.

    At most `max_scan` rows are read: a reader that may see few of them gets a
    short (even empty) page whose `next_cursor` still moves past what was read.
    """
    allowed = visible_tables(reader=reader)
    if allowed is not None:
        tables = set(allowed) & set(tables) if tables is not None else allowed
    if tables is not None and not tables:
        return ChangePage([], after, False)
    rows = in_log_order(LiveUpdate.objects.filter(tenant_id=reader.tenant_id))
    if tables is not None:
        rows = rows.filter(table__in=sorted(tables))
    as_seen = _as_seen(reader, binding)
    budget = max_scan or settings.HERALD_CATCH_UP_MAX_SCAN
    found: list[LiveUpdate] = []
    position = cursor_position(tenant_id=reader.tenant_id, cursor=after)
    if position[0] == 0:
        # Its row is gone (or was never the tenant's): what follows its id.
        rows = rows.filter(pk__gt=after)
    cursor = after
    while budget > 0:
        want = min(PAGE_ROWS, budget)
        page = list(after_position(rows, position)[:want])
        for index, update in enumerate(page):
            cursor, position = update.pk, position_of(update)
            if (seen := as_seen(update)) is not None:
                found.append(seen)
                if len(found) == limit:
                    more = (
                        index + 1 < len(page) or after_position(rows, position).exists()
                    )
                    return ChangePage(found, cursor, more)
        if len(page) < want:
            return ChangePage(found, cursor, False)  # read to the end of the log
        budget -= len(page)
    return ChangePage(found, cursor, after_position(rows, position).exists())


def _as_seen(
    reader: Reader, binding: Binding | None
) -> Callable[[LiveUpdate], LiveUpdate | None]:
    """A change as the reader sees it, or None when it may not see it at all."""
    policies: dict[str, dict[str, Rules]] = {}

    def seen(update: LiveUpdate) -> LiveUpdate | None:
        if binding is not None and not binding_matches(
            binding,
            table=update.table,
            change_type=update.type,
            record=update.record,
            old_record=update.old_record,
        ):
            return None
        if reader.role == SERVICE_ROLE:
            return _selected(update, binding)
        if update.table not in policies:
            policies[update.table] = row_policy_rules(
                tenant_id=reader.tenant_id, table=update.table
            )
        rules = policies[update.table].get(reader.role, [])
        # As the sockets do: a DELETE is judged on the row it removed.
        row = update.old_record if update.type == "DELETE" else update.record
        if not row_visible(
            role=reader.role, policies=rules, row=row, claims=reader.claims
        ):
            return None
        return _selected(_old_row_as_seen(update, reader=reader, rules=rules), binding)

    return seen


def _selected(update: LiveUpdate, binding: Binding | None) -> LiveUpdate:
    """The change cut to the binding's `select` columns, as the sockets cut it
    (after the filter and the row policy have seen the whole row)."""
    if binding is None or binding.select is None:
        return update
    shaped = project_change(
        {
            "record": update.record,
            "old_record": update.old_record,
            "columns": update.columns,
        },
        binding.select,
    )
    cut = copy.copy(update)  # never saved: the log row stays whole
    cut.record, cut.old_record = shaped["record"], shaped["old_record"]
    cut.columns = shaped["columns"]
    return cut


def _old_row_as_seen(update: LiveUpdate, *, reader: Reader, rules: Rules) -> LiveUpdate:
    """The change, or a copy with its old row cut if the reader may not see it."""
    if old_row_visible(
        role=reader.role,
        policies=rules,
        change_type=update.type,
        old_record=update.old_record,
        claims=reader.claims,
    ):
        return update
    redacted = copy.copy(update)  # never saved: the log row stays whole
    redacted.old_record = redacted_old_record(update.old_record)
    return redacted


def log_head(*, tenant_id: int) -> int:
    """The cursor of the tenant's latest readable change (0 before its first)."""
    rows = in_log_order(LiveUpdate.objects.filter(tenant_id=tenant_id))
    latest = rows.reverse().values_list("pk", flat=True).first()
    return latest or 0
