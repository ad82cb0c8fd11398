"""The Supabase Realtime WebSocket endpoint (`/realtime/v1/websocket`).

The consumer authenticates at connect, then speaks Phoenix frames: heartbeats,
joins with postgres_changes bindings, token refresh, leave. Changes reach its
sockets through the process hub, never through a channel of its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable
from typing import Any
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from redis.exceptions import RedisError

from audit.models import EventType
from realtime import errors, metrics
from realtime.auth import (
    KeyCache,
    Principal,
    principal_offline,
    principal_shared,
)
from realtime.batched import batched
from realtime.bindings import (
    join_reply_entries,
    parse_bindings,
    select_checked,
    selected_tables,
)
from realtime.bounds import (
    MAX_BINDINGS_PER_JOIN,
    MAX_FRAME_DEPTH,
    MAX_JSON_DEPTH,
    MAX_NAME_LENGTH,
    MAX_TOPIC_LENGTH,
    has_control_characters,
    too_deep,
)
from realtime.callback_socket import CallbackMixin
from realtime.channel import TOPIC_PREFIX, JoinConfig, JoinedChannel, join_token
from realtime.channel_policy import ChannelRule, channel_allowed
from realtime.client_ip import scope_client_ip
from realtime.db import best_effort, in_db
from realtime.fastsend import close_frame, overfull, protocol_of, tcp_transport_of
from realtime.guards import CLOSE_LIMIT, GuardsMixin, LimitReached
from realtime.hub import Member, TopicMember, hub
from realtime.issuers import issuer_keys_warm
from realtime.layer import topic_group
from realtime.protocol import (
    ACCESS_TOKEN,
    BROADCAST,
    HEARTBEAT,
    PHOENIX_TOPIC,
    PHX_JOIN,
    PHX_LEAVE,
    PRESENCE,
    Codec,
    Message,
    ProtocolError,
    close,
    codec_for_vsn,
    error_frame,
    reply,
)
from realtime.replay import (
    ReplayGate,
    UnableToReplay,
    change_feed_table,
    replay_request,
    replication_ready_asked,
)
from realtime.replay_join import feed_binding, replay_load, replay_send
from realtime.selectors import channel_rules, tracked_columns
from realtime.services.sockets import (
    connections_close,
    connections_open,
    join_principal,
    refusal_event,
    refusal_record,
)
from realtime.topics import TopicsMixin
from subscriptions.services import subscriptions_close, subscriptions_open

logger = logging.getLogger(__name__)

# Close code for a frame over the size limit. daphne itself closes with 1009
# past the same limit (see `manage.py serve`) and lets an application use only
# 1000 or 3000-4999, so this is 1009 in the application range.
CLOSE_TOO_BIG = 4009
# Closed on an order: the key was revoked or the tenant suspended.
CLOSE_ORDERED = 4001
# A handler failed where the socket could not be kept (RFC 6455's 1011).
CLOSE_FAILED = 1011
TOO_MANY_MESSAGES = "Too many messages per second"
# Supabase's fallback reason for a channel that failed.
CHANNEL_FAILED = "Unknown Error on Channel"

# Token-expiry tasks in flight, held so the loop cannot collect them early.
EXPIRING: set[asyncio.Task[None]] = set()


async def released(what: str, step: Awaitable[Any]) -> None:
    """One step of letting go of a socket: a failure is logged, and the steps
    after it still run (a slot, a row, a membership are each released)."""
    try:
        await step
    except errors.DatabaseUnavailable:
        # The row stays active until the worker's sweep closes it.
        logger.warning("Could not write the release of %s: database down", what)
    except Exception:
        logger.exception("Could not release %s", what)


def query_param(scope: dict[str, Any], name: str) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(name)
    return values[0] if values else None


def read_rights(
    rules: list[ChannelRule], principal: Principal, sub_topic: str
) -> tuple[bool, bool]:
    """May the principal read a private topic's (broadcasts, presence)?"""
    return tuple(  # type: ignore[return-value]
        channel_allowed(
            rules,
            role=principal.role,
            claims=principal.claims,
            topic=sub_topic,
            extension=extension,
            action="read",
        )
        for extension in ("broadcast", "presence")
    )


class RealtimeConsumer(CallbackMixin, TopicsMixin, GuardsMixin, AsyncWebsocketConsumer):
    # No per-socket layer channel: an alias with no layer behind it makes
    # Channels skip creating one (and the receive task it would need).
    channel_layer_alias = "herald.sockets-have-no-channel"

    codec: Codec
    principal: Principal

    async def connect(self) -> None:
        self.channels: dict[str, JoinedChannel] = {}
        self.released = False
        self.closing = False
        self.transport: Any = None
        self.connection_id = uuid.uuid4().hex
        self.ip = scope_client_ip(self.scope)  # before accept clears the headers
        codec = codec_for_vsn(query_param(self.scope, "vsn"))
        if codec is None:
            await self.close()  # before accept: HTTP 403, as Phoenix does
            return
        try:
            opened = await batched(connections_open)(
                apikey=query_param(self.scope, "apikey"),
                ip=self.ip,
                keys=await hub().key_cache(),
            )
        except errors.HeraldError as exc:
            logger.info("Socket refused: %s", exc.message)
            await self.close()
            return
        self.principal = principal_shared(opened)
        self.callback_prepare(opened)  # the tenant's callback, if any
        self.codec = codec
        await self.accept()
        # daphne's TCP transport, when that is what serves the socket: how much
        # is queued for the client, and a way to drop it when it stops reading.
        self.transport = tcp_transport_of(protocol_of(self.base_send))
        # The handshake's headers are read; they would be kept for the life of
        # the socket by every frame that holds the scope (about 1 KB each).
        headers = self.scope.get("headers")
        if isinstance(headers, list):
            headers.clear()
        await self.callback_connect()
        if await self.hold_connection():
            await hub().register(self)
            metrics.CONNECTIONS.labels(self.principal.tenant.slug).inc()

    async def close(
        self, code: int | bool | None = None, reason: str | None = None
    ) -> None:
        # Codes autobahn will not send itself (1011, 1012) go out directly.
        if (
            isinstance(code, int)
            and not isinstance(code, bool)
            and not _application_code(code)
            and close_frame(self.base_send, code)
        ):
            return
        await super().close(code=code, reason=reason)

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Whatever a handler does, the socket lets go of all it holds.

        A failure that `receive` could not answer on the channel ends here:
        the socket closes with 1011 and is released as on any disconnect
        (its slot, subscription rows, streams, topics and presence).
        """
        try:
            await self._handle(message)
        except StopConsumer:
            raise
        except Exception:
            logger.exception("Socket failed on %s; closing it", message.get("type"))
            self._count_failure()
            await released("the socket", self.close(code=CLOSE_FAILED))
            await self.disconnect(CLOSE_FAILED)
            raise StopConsumer() from None

    async def _handle(self, message: dict[str, Any]) -> None:
        """Channels' dispatch, without its hop to the database thread before
        every message (`aclose_old_connections`, since Channels 4.2): every
        frame of every socket queued there, behind the batched writes, and a
        storm's joins waited seconds for it. Herald's database calls close
        stale connections themselves (`realtime.db.in_db`, through Channels'
        `database_sync_to_async`)."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def disconnect(self, code: int) -> None:
        if getattr(self, "released", True):
            return  # released already, or never connected
        self.released = True
        if self.connection_id in hub().sockets:
            metrics.CONNECTIONS.labels(self.principal.tenant.slug).dec()
        hub().unregister(self)
        for channel in list(self.channels.values()):
            await self._forget(channel)
        if hasattr(self, "codec"):  # it was accepted
            await self.release_connection()
            await released(
                "the disconnect row",
                batched(connections_close)(
                    principal=self.principal, ip=self.ip, code=code
                ),
            )

    async def shut_down(self, code: int) -> None:
        """The process is stopping (realtime.shutdown): close, then release all."""
        await released("the socket", self.close(code=code))
        await self.disconnect(code)

    def _count_failure(self) -> None:
        principal = getattr(self, "principal", None)
        slug = principal.tenant.slug if principal is not None else ""
        metrics.FAILURES.labels(slug).inc()

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None
    ) -> None:
        if self.closing:
            return  # closed for a flood: what is still in flight is dropped
        try:
            message = (
                self.codec.decode_text(text_data)
                if text_data is not None
                else self.codec.decode_binary(bytes_data or b"")
            )
        except ProtocolError as exc:
            if self.message_rate(heartbeat=False) == "flood":
                await self._flood()
            else:
                await self._refuse_frame(exc)
            return
        rate = self.message_rate(heartbeat=message.event == HEARTBEAT)
        if rate == "flood":
            await self._flood()
            return
        if rate == "over":
            await self._too_many_messages(message)
            return
        if too_deep(message.payload, MAX_FRAME_DEPTH):
            reason = f"MalformedFrame: values nest at most {MAX_JSON_DEPTH} levels"
            await self.reply(message, "error", {"reason": reason})
            return
        try:
            await self.dispatch_frame(message)
        except Exception:
            logger.exception("Socket failed on a %r frame", message.event[:40])
            self._count_failure()
            await self._contain(message)

    async def _contain(self, message: Message) -> None:
        """A frame's handler failed: release the channel it concerned, if any,
        and say so as Phoenix does for a crashed channel (clients rejoin)."""
        channel = self.channels.get(message.topic)
        if channel is not None:
            await self._forget(channel)
        await self.reply(message, "error", {"reason": CHANNEL_FAILED})
        if channel is not None and message.event != PHX_JOIN:
            await self.send_message(error_frame(channel.topic, channel.join_ref))

    async def _flood(self) -> None:
        """Far over the rate: answering each frame would cost more than the frames,
        so the socket is closed with the limit's code."""
        self.closing = True
        metrics.REFUSALS.labels(self.principal.tenant.slug, "flood").inc()
        await self.limit_record(TOO_MANY_MESSAGES)
        await self.close(code=CLOSE_LIMIT)

    async def _too_many_messages(self, message: Message) -> None:
        """Over the rate: the channel is shut, as Supabase does; else say why."""
        reason = TOO_MANY_MESSAGES
        channel = self.channels.get(message.topic)
        if channel is None:
            await self.reply(message, "error", {"reason": reason})
            return
        await self.limit_record(reason, channel.topic)
        await self.shut(channel, reason)

    async def dispatch_frame(self, message: Message) -> None:
        if message.topic == PHOENIX_TOPIC and message.event == HEARTBEAT:
            await self.reply(message, "ok", {})
        elif message.event == PHX_JOIN:
            await self.on_join(message)
        elif message.event == PHX_LEAVE:
            await self.on_leave(message)
        elif message.topic not in self.channels:
            await self.reply(message, "error", {"reason": "unmatched topic"})
        elif message.event == ACCESS_TOKEN:
            await self.on_access_token(message, self.channels[message.topic])
        elif message.event == BROADCAST:
            await self.on_broadcast(message, self.channels[message.topic])
        elif message.event == PRESENCE:
            await self.on_presence(message, self.channels[message.topic])
        else:
            reason = f"UnknownEvent: {message.event!r} is not handled on this channel"
            await self.reply(message, "error", {"reason": reason})

    # --- Frames out -------------------------------------------------------------

    async def send_message(self, message: Message) -> None:
        await self.send(text_data=self.codec.encode(message))
        if overfull(self.transport):  # replies it never reads count too
            hub().drop_slow(self.transport, self.principal.tenant.slug)

    async def reply(self, message: Message, status: str, response: Any) -> None:
        await self.send_message(
            reply(message.topic, message.ref, message.join_ref, status, response)
        )

    async def _refuse_frame(self, exc: ProtocolError) -> None:
        if exc.code == "frame_too_large":
            await self.close(code=CLOSE_TOO_BIG)
            return
        # The frame could not be read, so neither can its topic or ref: say why
        # on the socket's own topic, where no client mistakes it for a reply.
        await self.send_message(
            reply(
                PHOENIX_TOPIC, None, None, "error", {"reason": f"MalformedFrame: {exc}"}
            )
        )

    # --- Joining and leaving ------------------------------------------------------

    async def on_join(self, message: Message) -> None:
        topic = message.topic
        if not topic.startswith(TOPIC_PREFIX):
            await self.reply(message, "error", {"reason": "unmatched topic"})
            return
        if topic == TOPIC_PREFIX:
            reason = "TopicNameRequired: You must provide a topic name"
            await self.reply(message, "error", {"reason": reason})
            return
        if len(topic) > len(TOPIC_PREFIX) + MAX_TOPIC_LENGTH or (
            has_control_characters(topic)
        ):
            reason = (
                f"InvalidJoinPayload: a topic is at most {MAX_TOPIC_LENGTH} "
                "characters, with no control characters"
            )
            await self.reply(message, "error", {"reason": reason})
            return
        if topic in self.channels:
            # A second join replaces the first (Phoenix closes the old one).
            old = self.channels[topic]
            await self._forget(old)
            await self.send_message(close(topic, old.join_ref))
        try:
            await self.check_join_rate(self.principal, topic)
            channel = await self._authorize_join(message)
        except LimitReached as exc:
            metrics.REFUSALS.labels(
                self.principal.tenant.slug, metrics.refusal_kind(exc.reason)
            ).inc()
            await self.reply(message, "error", {"reason": exc.reason})
            return
        except errors.HeraldError as exc:
            metrics.REFUSALS.labels(
                self.principal.tenant.slug, metrics.refusal_kind(exc.reason)
            ).inc()
            await best_effort(
                refusal_record,
                event_type=EventType.JOIN_REFUSED,
                reason=exc.reason,
                principal=self.principal,
                target=topic,
                ip=self.ip,
            )
            await self.reply(message, "error", {"reason": exc.reason})
            return
        try:
            await self._start(channel, message)
        except RedisError as exc:  # Redis down, not restarting: refused, held nothing
            logger.warning("Join of %s failed, Redis unavailable: %s", topic, exc)
            reason = errors.LayerUnavailable().reason
            if channel.subscription_id:  # opened, so answered "ok" already
                await self.shut(channel, reason)
                return
            await self._forget(channel)
            await self.reply(message, "error", {"reason": reason})

    async def _authorize_join(self, message: Message) -> JoinedChannel:
        token = self.callback_join_token(join_token(message.payload))
        config = JoinConfig.parse(message.payload)
        join_bounds_check(config)
        if self.principal.tenant.private_only and not config.private:
            raise PrivateOnly()
        principal = await self._principal_for(token, message.topic)
        sub_topic = message.topic[len(TOPIC_PREFIX) :]
        rules: list[ChannelRule] = []
        can_read = (True, True)
        if config.private:
            rules = await in_db(channel_rules, tenant_id=principal.tenant.pk)
            answered = await self.callback_join(principal, sub_topic, token)
            principal = answered or principal
            can_read = (
                (True, True) if answered else read_rights(rules, principal, sub_topic)
            )
            if not any(can_read):
                raise errors.Forbidden(
                    "You do not have permissions to read from this Channel topic: "
                    + sub_topic
                )
        # Refused here, before anything is held (Supabase's wording).
        replay_request(
            message.payload,
            private=config.private,
            may_read=can_read[0],
            sub_topic=sub_topic,
        )
        if len(self.channels) >= principal.tenant.max_channels_per_client:
            raise ChannelLimit()
        refusal = await self.hold_user(principal)
        if refusal is not None:
            raise LimitReached(refusal)
        return JoinedChannel(
            topic=message.topic,
            join_ref=message.join_ref,
            principal=principal,
            token=token,
            config=config,
            subscription_id=0,
            room=topic_group(principal.tenant.pk, sub_topic, private=config.private),
            member_of_topic=TopicMember(
                send=self.base_send,
                codec=self.codec,
                topic=message.topic,
                connection=self.connection_id,
                tenant=principal.tenant.slug,
                broadcast_self=config.broadcast_self,
                read_broadcast=can_read[0],
                read_presence=can_read[1],
                presence_enabled=config.presence_enabled,
                transport=self.transport,
            ),
            presence_key=config.presence_key or str(uuid.uuid4()),
            rules=rules,
        )

    async def _start(self, channel: JoinedChannel, message: Message) -> None:
        # Held from here on: whatever fails below, `_forget` lets go of it all.
        self.channels[channel.topic] = channel
        bindings, problems = parse_bindings(channel.config.postgres_changes)
        if tables := selected_tables(bindings):
            known = await in_db(tracked_columns, tables=tables)
            bindings, unknown = select_checked(bindings, known)
            problems += unknown
        valid = tuple(b for b in bindings if b.error is None)
        # A change feed's changes are its broadcasts: only for broadcast readers.
        feed = change_feed_table(
            channel.sub_topic,
            enabled=channel.principal.tenant.change_feeds
            and channel.member_of_topic.read_broadcast,
            private=channel.config.private,
        )
        request = replay_request(
            message.payload,
            private=channel.config.private,
            may_read=channel.member_of_topic.read_broadcast,
            sub_topic=channel.sub_topic,
        )
        gate = None
        if request is not None or feed is not None:
            # Live frames wait until the replay is written (realtime/replay.py).
            gate = ReplayGate(self.base_send)
            channel.member_of_topic.send = gate
        if feed is not None:
            channel.member = Member(
                # Through the gate, never written to the transport directly
                # (fastsend): no transport, no protocol.
                send=gate or self.base_send,
                codec=self.codec,
                topic=channel.topic,
                bindings=(feed_binding(feed),),
                principal=channel.principal,
                feed=True,
            )
            await hub().add(channel.member)
            bindings, problems, valid = [], [], ()
        if valid:
            channel.member = Member(
                send=gate or self.base_send,
                protocol=None if gate else protocol_of(self.base_send),
                transport=None if gate else self.transport,
                codec=self.codec,
                topic=channel.topic,
                bindings=valid,
                principal=channel.principal,
            )
            # Joined to its streams before the reply: nothing published after
            # the client sees SUBSCRIBED can be missed.
            await hub().add(channel.member)
        await hub().join_room(channel.room, channel.member_of_topic)
        entries = join_reply_entries(bindings)
        try:
            channel.subscription_id = await batched(subscriptions_open)(
                principal=channel.principal,
                topic=channel.topic,
                bindings=entries,
                private=channel.config.private,
                node=hub().node,
                connection=self.connection_id,
                join_ref=channel.join_ref,
                ip=self.ip,
            )
        except errors.DatabaseUnavailable as exc:
            await self._forget(channel)
            await self.reply(message, "error", {"reason": exc.reason})
            return
        channel.member_of_topic.subscription_id = channel.subscription_id
        if channel.member is not None:
            channel.member.subscription_id = channel.subscription_id
        if gate is not None:
            try:
                backlog = await replay_load(channel, request, table=feed)
            except UnableToReplay as exc:
                await self._forget(channel)
                await self.reply(message, "error", {"reason": exc.reason})
                return
        metrics.JOINS.labels(channel.principal.tenant.slug).inc()
        self._schedule_expiry(channel)
        await self.reply(message, "ok", {"postgres_changes": entries})
        if replication_ready_asked(message.payload):
            # The relay reads the database itself: replication is there once
            # the join is (Supabase's answer when its replication connects).
            await self.send_message(
                channel.system(
                    status="ok",
                    message="Replication connection established",
                    extension="system",
                )
            )
        if gate is not None:
            try:
                await replay_send(channel, backlog, gate, self._send_text)
            except UnableToReplay as exc:
                await self.shut(channel, exc.reason)
                return
        if channel.member_of_topic.presence_enabled:
            await self.push_presence_state(channel)
        for problem in problems:
            await self.send_message(
                channel.system(
                    status="error", message=problem, extension="postgres_changes"
                )
            )
        if valid and not problems:
            await self.send_message(
                channel.system(
                    status="ok",
                    message="Subscribed to PostgreSQL",
                    extension="postgres_changes",
                )
            )

    async def _send_text(self, text: str) -> None:
        await self.base_send({"type": "websocket.send", "text": text})

    async def on_leave(self, message: Message) -> None:
        await self.reply(message, "ok", {})
        channel = self.channels.get(message.topic)
        if channel is not None:
            await self._forget(channel)
            await self.send_message(close(channel.topic, channel.join_ref))

    async def _forget(self, channel: JoinedChannel) -> None:
        """Stop delivering to a channel and close its subscription row.

        Each step stands alone: a failure in one (Redis, the database) is
        logged and the others still run.
        """
        self.channels.pop(channel.topic, None)
        channel.cancel_expiry()
        # Presence is shared in Redis; if it cannot hear the leave now, the
        # sweep drops the entry once this process is gone.
        await released("presence", self.untrack(channel))
        room = hub().leave_room(channel.room, channel.member_of_topic)
        await released("a topic", room)
        members: list[Member | TopicMember] = [channel.member_of_topic]
        if channel.member is not None:
            await released("streams", hub().remove(channel.member))
            members.append(channel.member)
        # What was delivered since the hub's last flush of this subscription.
        unflushed = sum(m.delivered - m.flushed for m in members)
        for member in members:
            member.flushed = member.delivered
        if channel.subscription_id:
            await released(
                "a subscription row",
                batched(subscriptions_close)(
                    subscription_id=channel.subscription_id,
                    delivered=unflushed,
                    principal=channel.principal,
                    ip=self.ip,
                ),
            )

    async def shut(self, channel: JoinedChannel, reason: str) -> None:
        """Close a channel from the server side: a system error, then phx_close."""
        await self._forget(channel)
        await self.send_message(
            channel.system(status="error", message=reason, extension="system")
        )
        await self.send_message(close(channel.topic, channel.join_ref))

    # --- Orders from elsewhere (revoked keys, suspended tenants, admins) --------

    def subscription_ids(self) -> list[int]:
        return [c.subscription_id for c in self.channels.values() if c.subscription_id]

    def matches(self, order: dict[str, Any]) -> bool:
        """Does a disconnect order concern this socket or one of its channels?"""
        if order.get("connection") is not None:
            return bool(order["connection"] == self.connection_id)
        if order.get("tenant") is not None:
            return bool(order["tenant"] == self.principal.tenant.pk)
        principals = [self.principal, *(c.principal for c in self.channels.values())]
        return any(p.key_id == order.get("key") for p in principals)

    async def obey(self, order: dict[str, Any]) -> None:
        reason = order["reason"]
        whole = order.get("tenant") is not None or (
            order.get("key") is not None and self.principal.key_id == order["key"]
        )
        for channel in list(self.channels.values()):
            if (
                whole
                or order.get("topic") == channel.topic
                or (
                    order.get("key") is not None
                    and channel.principal.key_id == order["key"]
                )
            ):
                await self.shut(channel, reason)
        if whole:
            await self.close(code=CLOSE_ORDERED)

    # --- Tokens -------------------------------------------------------------------

    async def _principal_for(self, token: str | None, topic: str) -> Principal:
        if token is None:  # supabase-js often joins without a token
            return await self.callback_connection()
        keys = await hub().key_cache()
        principal = await self._principal_here(token, topic, keys)
        if principal is not None:
            return principal_shared(principal)
        await issuer_keys_warm(tenant=self.principal.tenant, token=token)
        principal = await in_db(
            join_principal,
            connection=self.principal,
            token=token,
            topic=topic,
            ip=self.ip,
            keys=keys,
        )
        return principal_shared(principal)

    async def _principal_here(
        self, token: str, topic: str, keys: KeyCache | None
    ) -> Principal | None:
        """A token checked on the event loop (no hop to the database thread,
        where a storm's joins would queue one by one), or None if it needs the
        database; a refusal is still written down, as `join_principal` does."""
        try:
            return principal_offline(self.principal.tenant, token, keys=keys)
        except errors.HeraldError as exc:
            await best_effort(
                refusal_record,
                event_type=refusal_event(exc),
                reason=exc.message,
                principal=self.principal,
                target=topic,
                ip=self.ip,
            )
            raise

    async def on_access_token(self, message: Message, channel: JoinedChannel) -> None:
        token = self.callback_join_token(join_token(message.payload))
        if token is None or token == channel.token:
            return
        try:
            principal = await self._principal_for(token, channel.topic)
        except errors.HeraldError as exc:
            await self.shut(channel, exc.message)
            return
        refusal = await self.hold_user(principal)
        if refusal is not None:
            await self.limit_record(refusal, channel.topic)
            await self.shut(channel, refusal)
            return
        if channel.config.private:
            can_read = read_rights(channel.rules, principal, channel.sub_topic)
            feed = channel.member is not None and channel.member.feed
            if not any(can_read) or (feed and not can_read[0]):
                await self.shut(
                    channel,
                    "You no longer have permission to read from this Channel topic: "
                    + channel.sub_topic,
                )
                return
            topic_member = channel.member_of_topic
            topic_member.read_broadcast, topic_member.read_presence = can_read
        channel.principal, channel.token = principal, token
        if channel.member is not None:
            await hub().replace_principal(channel.member, principal)
        self._schedule_expiry(channel)

    def _schedule_expiry(self, channel: JoinedChannel) -> None:
        channel.cancel_expiry()
        if channel.principal.exp is None:
            return
        delay = max(0.0, channel.principal.exp - time.time())
        channel.expiry = asyncio.get_running_loop().call_later(
            delay, self._expire_soon, channel
        )

    def _expire_soon(self, channel: JoinedChannel) -> None:
        # The loop keeps only a weak reference to a task: one nobody holds can
        # be collected before it runs, and the expired channel would stay open.
        task = asyncio.create_task(self._expire(channel))
        EXPIRING.add(task)
        task.add_done_callback(EXPIRING.discard)

    async def _expire(self, channel: JoinedChannel) -> None:
        if self.channels.get(channel.topic) is channel and (
            channel.principal.via_callback
        ):
            await self.callback_renew(channel)  # asked again, not expired
        elif self.channels.get(channel.topic) is channel:
            lapsed = int(time.time() - (channel.principal.exp or 0))
            reason = f"Token has expired {lapsed} seconds ago"
            await best_effort(
                refusal_record,
                event_type=refusal_event(errors.TokenExpired(reason)),
                reason=reason,
                principal=channel.principal,
                target=channel.topic,
                ip=self.ip,
            )
            await self.shut(channel, reason)


def join_bounds_check(config: JoinConfig) -> None:
    """Refuse a join whose config is past a bound, before any work on it."""
    bindings = config.postgres_changes
    if isinstance(bindings, list) and len(bindings) > MAX_BINDINGS_PER_JOIN:
        raise errors.InvalidJoinPayload(
            f"a channel has at most {MAX_BINDINGS_PER_JOIN} postgres_changes bindings"
        )
    if len(config.presence_key) > MAX_NAME_LENGTH:
        raise errors.InvalidJoinPayload(
            f"a presence key is at most {MAX_NAME_LENGTH} characters"
        )


def _application_code(code: int) -> bool:
    """A close code autobahn's sendClose accepts (1000, or 3000-4999)."""
    return code == 1000 or 3000 <= code <= 4999


class ChannelLimit(errors.HeraldError):
    status_code = 429
    code = "too_many_channels"
    reason_code = "ChannelRateLimitReached"
    default_message = "Too many channels"


class PrivateOnly(errors.HeraldError):
    """The tenant's `private_only` is on and the join is of a public channel."""

    status_code = 403
    code = "private_only"
    reason_code = "PrivateOnly"
    default_message = "This project only allows private channels"
