"""Broadcast replay: `config.broadcast.replay` at join, and the change feeds.

A join on a private topic may ask for the stored broadcasts since a time
(`{since: <ms epoch>, limit: <n>}`, Supabase's Broadcast Replay): it gets the
latest `limit` (at most 25) stored after `since`, oldest first, with
`meta: {replayed: true, id}`, then the live ones, which carry `meta.id` too.
The store is `herald_messages` (realtime/services/replay.py writes REST and
socket broadcasts there; database broadcasts are there already).

A change feed (`changes:<table>`, when the tenant has `change_feeds` on) is
a private topic on which a table's changes arrive as broadcasts whose
`meta.id` is the change's cursor (a string of digits: the clients type
`meta.id` as a string); there `replay.since` is that cursor as a number, and the
join replays every change after it (not only 25), as its reader may see it,
before the live ones. supabase-js hands `meta` to the broadcast callback, so
an application keeps the last id and rejoins from it (README, Resume cursor).

Parsing and its errors follow Supabase's RealtimeChannel (the wording of
`UnableToReplayMessages`); the parsing lives here, apart from the rest of the
join config.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from realtime import errors

# Supabase's hard limit on replayed messages, and its default limit.
MAX_REPLAY = 25
# A change feed's topic: `changes:<table>`.
CHANGE_FEED_PREFIX = "changes:"
# The milliseconds Python's datetime can hold (years 1 to 9999); Supabase
# refuses what Elixir's DateTime cannot hold, the same "not valid" answer.
MIN_SINCE = -62_135_596_800_000
MAX_SINCE = 253_402_300_799_999

Send = Callable[[dict[str, Any]], Awaitable[None]]


class UnableToReplay(errors.HeraldError):
    code = "unable_to_replay"
    reason_code = "UnableToReplayMessages"
    default_message = "Realtime was unable to replay messages"


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    since: int  # ms since the epoch, or a change feed's cursor
    limit: int  # already capped to 1..MAX_REPLAY


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def replay_asked(payload: Any) -> tuple[bool, Any]:
    """Whether the join names `config.broadcast.replay` at all, and its value.

    As in Supabase, only a map `config` with a map `broadcast` counts.
    """
    config = payload.get("config") if isinstance(payload, dict) else None
    broadcast = config.get("broadcast") if isinstance(config, dict) else None
    if isinstance(broadcast, dict) and "replay" in broadcast:
        return True, broadcast["replay"]
    return False, None


def replay_request(
    payload: Any, *, private: bool, may_read: bool, sub_topic: str
) -> ReplayRequest | None:
    """The replay a join asks for, or None; raise where Supabase refuses.

    Supabase's order: a reader without broadcast read is Unauthorized, a public
    channel is refused, a replay that is not a map is ignored, and `since`
    (required) and `limit` (default 25) must be integers; `limit` is then
    brought into 1..25.
    """
    asked, value = replay_asked(payload)
    if not asked:
        return None
    if private and not may_read:
        raise errors.Forbidden(
            "You do not have permissions to read from this Channel topic: " + sub_topic
        )
    if not private:
        raise UnableToReplay("Replay is not allowed for public channels")
    if not isinstance(value, dict):
        return None
    since, limit = value.get("since"), value.get("limit")
    if limit is None or limit is False:
        limit = MAX_REPLAY
    if not isinstance(since, int) or isinstance(since, bool) or not _is_int(limit):
        raise UnableToReplay("Replay params are not valid")
    if not MIN_SINCE <= since <= MAX_SINCE:
        raise UnableToReplay("Replay params are not valid")
    return ReplayRequest(since=since, limit=max(min(limit, MAX_REPLAY), 1))


def replication_ready_asked(payload: Any) -> bool:
    """`config.broadcast.replication_ready`, as Supabase reads it (`!!value`
    in Elixir: anything but a missing key, null or false)."""
    config = payload.get("config") if isinstance(payload, dict) else None
    broadcast = config.get("broadcast") if isinstance(config, dict) else None
    if not isinstance(broadcast, dict):
        return False
    value = broadcast.get("replication_ready")
    return value is not None and value is not False


def change_feed_table(sub_topic: str, *, enabled: bool, private: bool) -> str | None:
    """The table a change feed topic carries, or None if it is not one."""
    if not enabled or not private or not sub_topic.startswith(CHANGE_FEED_PREFIX):
        return None
    table = sub_topic[len(CHANGE_FEED_PREFIX) :]
    return table or None


def frame_id(event: dict[str, Any]) -> Any:
    """`meta.id` of a broadcast frame a hub hands to a socket (None if none)."""
    text = event.get("text")
    if text is None:
        return None  # binary broadcasts are not stored, so have no id
    try:
        decoded = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    payload = decoded[4] if isinstance(decoded, list) else decoded.get("payload")
    meta = payload.get("meta") if isinstance(payload, dict) else None
    return meta.get("id") if isinstance(meta, dict) else None


class ReplayGate:
    """A channel's `send` while its replay goes out: live frames wait.

    The channel joins its topic (and streams) before the replay is read, so
    nothing committed meanwhile is missed; what arrives live in between is
    held, and once the replay is written it is let through, less what the
    replay carried already (by id). A change feed's ids come in order, so the
    filter ends at the first live id past the replay; a broadcast's ids are
    checked against the replayed ones for as long as the channel lives, as in
    Supabase.
    """

    def __init__(self, send: Send) -> None:
        self._send = send
        self._held: list[dict[str, Any]] | None = []
        self._seen: set[Any] = set()
        self._after: int | None = None

    async def __call__(self, event: dict[str, Any]) -> None:
        if self._held is not None:
            self._held.append(event)
            return
        if self._due(event):
            await self._send(event)

    def _due(self, event: dict[str, Any]) -> bool:
        if self._after is not None:
            ident = frame_id(event)
            if not isinstance(ident, str) or not ident.isdigit():
                return True  # presence and the like: not a change
            if int(ident) <= self._after:
                return False
            self._after = None  # changes come in cursor order from here on
            return True
        if self._seen:
            return frame_id(event) not in self._seen
        return True

    async def open(
        self, *, seen: set[Any] | None = None, after: int | None = None
    ) -> None:
        """The replay is written: let the held frames (then all) through."""
        self._seen = seen or set()
        self._after = after
        while self._held:
            held, self._held = self._held, []
            for event in held:
                if self._due(event):
                    await self._send(event)
        self._held = None  # no await since the last check: nothing is left behind
