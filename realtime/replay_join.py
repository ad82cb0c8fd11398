"""A join's replay: read before the join is answered, written right after.

The channel is on its topic (and its feed's stream) before anything is read,
its live frames held by a ReplayGate (realtime/replay.py): the first read
happens before the reply, so a replay that cannot be done refuses the join
(as Supabase does), and its frames go out once the client has its "ok".
A change feed's backlog is read page after page until it is caught up; only
then does the gate let live changes through, so nothing is lost or doubled.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson

from realtime import errors
from realtime.bindings import Binding, parse_bindings
from realtime.change_log import Reader
from realtime.channel import JoinedChannel
from realtime.db import in_db
from realtime.hub import feed_payload
from realtime.layer import change_data
from realtime.protocol import BROADCAST
from realtime.replay import ReplayGate, ReplayRequest, UnableToReplay
from realtime.replay_selectors import feed_replay, messages_replay


def feed_binding(table: str) -> Binding:
    """Every change of `table`: what a change feed's channel is bound to."""
    bindings, _ = parse_bindings([{"event": "*", "schema": "public", "table": table}])
    return bindings[0]


@dataclass(slots=True)
class Backlog:
    """Replayed frames (payload JSON) still to write, and where a feed stands."""

    payloads: list[bytes] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    table: str | None = None
    cursor: int | None = None  # a feed's last cursor read
    more: bool = False


def _reader(channel: JoinedChannel) -> Reader:
    principal = channel.principal
    return Reader(principal.tenant.pk, principal.role, principal.claims)


async def _feed_page(channel: JoinedChannel, backlog: Backlog) -> None:
    assert backlog.table is not None and backlog.cursor is not None
    try:
        page = await in_db(
            feed_replay,
            reader=_reader(channel),
            tenant=channel.principal.tenant,
            table=backlog.table,
            after=backlog.cursor,
        )
    except errors.CursorGone as exc:
        raise UnableToReplay(exc.message) from exc
    except errors.DatabaseUnavailable as exc:
        raise UnableToReplay() from exc
    backlog.payloads += [
        feed_payload(u.type, orjson.dumps(change_data(u)), u.pk, replayed=True)
        for u in page.changes
    ]
    backlog.cursor, backlog.more = page.next_cursor, page.has_more


async def replay_load(
    channel: JoinedChannel, request: ReplayRequest | None, *, table: str | None
) -> Backlog:
    """The first read of a join's replay; raises UnableToReplay."""
    backlog = Backlog(table=table)
    if request is None:
        return backlog
    if table is not None:
        if request.since < 0:
            raise UnableToReplay("Replay params are not valid")
        backlog.cursor = request.since
        await _feed_page(channel, backlog)
        return backlog
    try:
        stored = await in_db(
            messages_replay,
            tenant=channel.principal.tenant,
            topic=channel.sub_topic,
            since_ms=request.since,
            limit=request.limit,
        )
    except errors.DatabaseUnavailable as exc:
        raise UnableToReplay() from exc
    for message in stored:
        body = {
            "type": "broadcast",
            "event": message.event,
            "payload": message.payload,
            "meta": {"replayed": True, "id": str(message.id)},
        }
        backlog.payloads.append(orjson.dumps(body))
        backlog.ids.add(str(message.id))
    return backlog


async def replay_send(
    channel: JoinedChannel,
    backlog: Backlog,
    gate: ReplayGate,
    send: Callable[[str], Awaitable[None]],
) -> None:
    """Write the backlog (a feed's, to its end), then open the gate.

    Raises UnableToReplay when a later page cannot be read.
    """
    codec = channel.member_of_topic.codec
    while True:
        for payload in backlog.payloads:
            await send(
                codec.encode_raw(
                    topic=channel.topic,
                    event=BROADCAST,
                    payload_json=payload,
                )
            )
        backlog.payloads = []
        if not backlog.more:
            break
        await _feed_page(channel, backlog)
    if backlog.table is not None:
        await gate.open(after=backlog.cursor)
    else:
        await gate.open(seen=set(backlog.ids))
