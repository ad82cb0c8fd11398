"""Broadcast and presence on a joined channel (docs/protocol.md §7, §8).

A mixin of the socket consumer: what a client sends on its topic goes to the
topic's group on the channel layer, so every process delivers it to its own
members of the topic.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from realtime import errors
from realtime.channel import JoinedChannel
from realtime.channel_policy import channel_allowed
from realtime.db import in_db
from realtime.guards import GuardsMixin, LimitReached
from realtime.hub import hub
from realtime.layer import broadcast_send, presence_send
from realtime.presence import (
    CLIENT_PRESENCE_EXCEEDED,
    MAX_PRESENCE_KEYS,
    diff_payload,
    entry_field,
    phx_ref,
    state_payload,
    too_many_keys,
)
from realtime.protocol import PRESENCE_STATE, Message, push
from realtime.replay import change_feed_table
from realtime.services.broadcast import payload_limit
from realtime.services.replay import broadcast_store


def write_denied(channel: JoinedChannel) -> dict[str, str]:
    return {
        "reason": "Unauthorized: You do not have permissions to write to this "
        f"Channel topic: {channel.sub_topic}"
    }


class TopicsMixin(GuardsMixin):
    """Needs the consumer's connection id and its two ways of answering."""

    connection_id: str

    async def reply(self, message: Message, status: str, response: Any) -> None:
        raise NotImplementedError

    async def shut(self, channel: JoinedChannel, reason: str) -> None:
        raise NotImplementedError

    def _payload_limit(self, channel: JoinedChannel) -> int:
        return payload_limit(channel.principal.tenant)

    def _may_write(self, channel: JoinedChannel, extension: str) -> bool:
        if not channel.config.private:
            return True
        return channel_allowed(
            channel.rules,
            role=channel.principal.role,
            claims=channel.principal.claims,
            topic=channel.sub_topic,
            extension=extension,
            action="write",
        )

    # --- Broadcast ----------------------------------------------------------------

    async def on_broadcast(self, message: Message, channel: JoinedChannel) -> None:
        payload = message.payload
        if not isinstance(payload, dict) or not isinstance(payload.get("event"), str):
            reason = "Broadcast payload must be an object with a string `event`"
            await self.reply(message, "error", {"reason": reason})
            return
        inner = payload.get("payload")
        raw = inner if isinstance(inner, bytes) else None
        # Measured as realtime.services.broadcast.broadcast_size does for REST.
        body = (
            b"" if raw is not None else orjson.dumps({**payload, "type": "broadcast"})
        )
        if self._change_feed(channel):
            reason = "A change feed carries only its table's changes"
            await self.reply(message, "error", {"reason": reason})
            return
        if len(raw if raw is not None else body) > self._payload_limit(channel):
            # Supabase answers with this bare string.
            await self.reply(message, "error", "payload_size_exceeded")
            return
        if not self._may_write(channel, "broadcast"):
            await self.reply(message, "error", write_denied(channel))
            return
        if channel.config.private and raw is None:
            try:
                body = await self._stored(channel, payload)
            except errors.DatabaseUnavailable as exc:
                await self.reply(message, "error", {"reason": exc.reason})
                return
        await broadcast_send(
            channel.room,
            topic=channel.topic,
            payload_json=body,
            sender=self.connection_id,
            raw=None if raw is None else {"event": payload["event"], "payload": raw},
        )
        if channel.config.broadcast_ack:
            await self.reply(message, "ok", {})

    @staticmethod
    def _change_feed(channel: JoinedChannel) -> bool:
        tenant = channel.principal.tenant
        return channel.config.private and (
            change_feed_table(
                channel.sub_topic, enabled=tenant.change_feeds, private=True
            )
            is not None
        )

    @staticmethod
    async def _stored(channel: JoinedChannel, payload: dict[str, Any]) -> bytes:
        """Store a private broadcast for replay; its frame body, with `meta.id`."""
        ident = await in_db(
            broadcast_store,
            tenant=channel.principal.tenant,
            topic=channel.sub_topic,
            event=payload["event"],
            payload=payload.get("payload"),
        )
        return orjson.dumps(
            {**payload, "type": "broadcast", "meta": {"id": str(ident)}}
        )

    # --- Presence -----------------------------------------------------------------

    async def on_presence(self, message: Message, channel: JoinedChannel) -> None:
        payload = message.payload if isinstance(message.payload, dict) else {}
        event = str(payload.get("event", "")).lower()
        if not channel.presence_calls.allow(time.monotonic()):
            await self.limit_record(
                f"ClientPresenceRateLimitReached: {CLIENT_PRESENCE_EXCEEDED}",
                channel.topic,
            )
            await self.shut(channel, CLIENT_PRESENCE_EXCEEDED)
            return
        try:
            await self.check_presence_rate(channel.principal, channel.topic)
        except LimitReached as exc:
            await self.shut(channel, exc.reason)
            return
        if event == "track":
            await self._track(message, channel, payload.get("payload"))
        elif event == "untrack":
            await self.untrack(channel)
            await self.reply(message, "ok", {})
        else:
            reason = f"Unknown presence event {event!r}: use track or untrack"
            await self.reply(message, "error", {"reason": reason})

    async def _track(self, message: Message, channel: JoinedChannel, meta: Any) -> None:
        if not isinstance(meta, dict):
            reason = "Presence track payload must be a map"
            await self.reply(message, "error", {"reason": reason})
            return
        if len(orjson.dumps(meta)) > self._payload_limit(channel):
            await self.reply(
                message, "error", {"reason": "Track message size exceeded"}
            )
            return
        if too_many_keys(meta):
            reason = (
                f"Presence track payload holds at most {MAX_PRESENCE_KEYS} keys "
                "(at every level)"
            )
            await self.reply(message, "error", {"reason": reason})
            return
        if not self._may_write(channel, "presence"):
            await self.reply(message, "error", write_denied(channel))
            return
        previous = channel.presence_meta
        if (
            previous is not None
            and {k: v for k, v in previous.items() if k != "phx_ref"} == meta
        ):
            await self.reply(message, "ok", {})  # the same payload again: no change
            return
        if not channel.member_of_topic.presence_enabled:
            # Tracking turns presence on; the state comes before any diff.
            channel.member_of_topic.presence_enabled = True
            await self.push_presence_state(channel)
        diff = await self._store_presence(channel, {**meta, "phx_ref": phx_ref()})
        # The tracker hears its reply before the diff it is in, as from Supabase.
        await self.reply(message, "ok", {})
        await presence_send(channel.room, topic=channel.topic, diff=diff)

    async def _store_presence(
        self, channel: JoinedChannel, meta: dict[str, Any]
    ) -> dict[str, Any]:
        """Store the channel's presence; return the diff that announces it."""
        previous, key = channel.presence_meta, channel.presence_key
        await hub().presence_put(
            channel.room,
            entry_field(hub().node, self.connection_id),
            {"key": key, "meta": meta},
        )
        channel.presence_meta = meta
        joined = (
            meta if previous is None else {**meta, "phx_ref_prev": previous["phx_ref"]}
        )
        return diff_payload(
            joins=[{"key": key, "meta": joined}],
            leaves=[] if previous is None else [{"key": key, "meta": previous}],
        )

    async def untrack(self, channel: JoinedChannel) -> None:
        """Remove the channel's presence, announcing the leave to the topic."""
        if channel.presence_meta is None:
            return
        channel.presence_meta = None
        entry = await hub().presence_remove(
            channel.room, entry_field(hub().node, self.connection_id)
        )
        if entry is not None:
            await presence_send(
                channel.room, topic=channel.topic, diff=diff_payload(leaves=[entry])
            )

    async def push_presence_state(self, channel: JoinedChannel) -> None:
        if not channel.member_of_topic.read_presence:
            return
        entries = await hub().presence.entries(channel.room)
        state = state_payload(entries.values())
        await self.send_message(
            push(channel.topic, PRESENCE_STATE, state, join_ref=channel.join_ref)
        )
