"""The one door to the channel layer: group naming and what goes through it.

A change is published once, to its (tenant, table) stream group. Server
processes join a stream group once each (not once per socket) and fan out to
their own sockets locally. The changes of one publish travel together, one
message per stream, so that a socket due several of them gets them in one
write. Group names come only from these functions: they
match `^[a-zA-Z0-9._-]+$` and stay under 100 characters.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from asgiref.sync import async_to_sync
from channels.layers import BaseChannelLayer, get_channel_layer
from channels_redis.core import RedisChannelLayer
from redis.exceptions import ConnectionError as RedisConnectionError

if TYPE_CHECKING:
    from realtime.models import LiveUpdate

logger = logging.getLogger(__name__)

# Message types, the routing key of what a process receives (channels' convention).
CHANGES_TYPE = "stream.changes"
BROADCAST_TYPE = "topic.broadcast"
PRESENCE_TYPE = "topic.presence"
CONTROL_TYPE = "control.disconnect"
# Changes sent in one layer message at most (a bound on its size).
MAX_CHANGES_PER_MESSAGE = 100
# Messages a process takes off its channel at once, at most.
RECEIVE_BATCH = 100
# Every process listens here for orders about its sockets (revoked keys,
# suspended tenants, admin disconnects).
CONTROL_GROUP = "herald.control"
# A publish Redis refused (restarting) is sent once more after this pause: by
# then a quick restart is over and the hubs have put their memberships back
# (realtime.hub.RECONNECT_PAUSE), so the change still reaches sockets live.
SEND_RETRY_PAUSE = 1.0
# Every process's relay (realtime/relay.py) listens here for hints that the
# change log or herald_messages has new rows: a few bytes, never the changes.
RELAY_GROUP = "herald.relay"
WAKE_TYPE = "relay.wake"


def layer() -> BaseChannelLayer:
    found = get_channel_layer()
    if found is None:
        raise RuntimeError("CHANNEL_LAYERS is not configured")
    return found


R = TypeVar("R")
# The event loop sync code sends to a Redis layer on: (pid, loop).
_sender: tuple[int, asyncio.AbstractEventLoop] | None = None
_sender_lock = threading.Lock()
# Seconds a sync caller waits for one layer send (its retries included).
SYNC_SEND_TIMEOUT = 10.0


def _sender_loop() -> asyncio.AbstractEventLoop:
    global _sender  # one per process, made on first use
    with _sender_lock:
        if _sender is None or _sender[0] != os.getpid():  # none yet, or forked
            loop = asyncio.new_event_loop()
            threading.Thread(
                target=loop.run_forever, name="herald-layer-sender", daemon=True
            ).start()
            _sender = (os.getpid(), loop)
        return _sender[1]


def layer_sync(
    fn: Callable[..., Coroutine[Any, Any, R]], *args: Any, **kwargs: Any
) -> R:
    """Run a layer coroutine from sync code (a view, a save's on-commit hook).

    asgiref's async_to_sync, outside a server's thread, makes an event loop per
    call, and channels-redis a connection pool per loop: every publish from a
    worker or script paid a Redis connect. With Redis, sync code sends on one
    loop kept for the process instead. The in-memory layer's queues belong to
    the server's loop, which async_to_sync reaches; so does an async caller
    (async_to_sync refuses it with its own clear error).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        if isinstance(layer(), RedisChannelLayer):
            future = asyncio.run_coroutine_threadsafe(
                fn(*args, **kwargs), _sender_loop()
            )
            try:
                return future.result(timeout=SYNC_SEND_TIMEOUT)
            except TimeoutError:
                # A hung Redis must not hold a request thread for ever.
                future.cancel()
                raise
    return async_to_sync(fn)(*args, **kwargs)


def node_channel() -> str:
    """A channel for one process's hub.

    A plain name, not a process-local `prefix!` one: channels-redis keeps all
    the `!` channels of a process in one Redis key behind a lock, and takes
    them one at a time. A plain channel is a key of its own, which
    `receive_many` can empty at once.
    """
    return f"herald.node.{uuid.uuid4().hex}"


def relay_channel() -> str:
    """A channel for one process's relay (hints only; see realtime/relay.py)."""
    return f"herald.relay.{uuid.uuid4().hex}"


async def receive_many(channel_layer: BaseChannelLayer, channel: str) -> list[Any]:
    """The messages waiting on a plain channel (up to RECEIVE_BATCH), else
    the next one to arrive; an empty list when a wait runs out.

    channels-redis takes one message per `receive`, in four Redis round trips
    (a recovery script, BZPOPMIN, copying the message to an in-flight set,
    then removing it from there). A hub that fell behind then never has more
    than one message in hand, so a socket due several frames gets them in as
    many writes. Here one ZPOPMIN takes all that is waiting, in order, and only
    an empty channel waits, in BZPOPMIN; the hub writes a socket everything a
    batch brings it at once. What this gives up is the in-flight copy that
    lets a cancelled `receive` lose nothing: a hub's receive is cancelled
    only when its process stops, and a process's channel goes with it.

    Any other layer (the in-memory one) takes one message per call.
    """
    if not isinstance(channel_layer, RedisChannelLayer):
        return [await channel_layer.receive(channel)]
    assert "!" not in channel, "a process-local channel is read by receive()"
    key = channel_layer.prefix + channel
    # The Redis server group_send writes this channel's messages to.
    connection = channel_layer.connection(channel_layer.consistent_hash(channel))
    taken = await connection.zpopmin(key, RECEIVE_BATCH)
    if not taken:
        popped = await connection.bzpopmin(key, timeout=channel_layer.brpop_timeout)
        if popped is None:
            return []
        taken = [(popped[1], popped[2])]
    messages = []
    for content, _sent_at in taken:
        message = channel_layer.deserialize(content)
        message.pop("__asgi_channel__", None)  # group_send's routing, not ours
        messages.append(message)
    return messages


async def group_add_many(
    channel_layer: BaseChannelLayer, groups: Sequence[str], channel: str
) -> None:
    """`group_add` of one channel to many groups, in one Redis round trip per
    server (channels-redis takes two per group): what each group's sorted set
    gets is what `group_add` writes. Any other layer adds them one by one."""
    if not isinstance(channel_layer, RedisChannelLayer):
        for group in groups:
            await channel_layer.group_add(group, channel)
        return
    by_server: dict[int, list[str]] = {}
    for group in dict.fromkeys(groups):
        assert channel_layer.require_valid_group_name(group), group
        by_server.setdefault(channel_layer.consistent_hash(group), []).append(group)
    for index, names in by_server.items():
        connection = channel_layer.connection(index)
        async with connection.pipeline(transaction=False) as pipe:
            for group in names:
                key = channel_layer._group_key(group)
                pipe.zadd(key, {channel: time.time()})
                pipe.expire(key, channel_layer.group_expiry)
            await pipe.execute()


def stream_group(tenant_id: int, table: str) -> str:
    """The group of every process with a socket bound to (tenant, table)."""
    return f"herald.t{tenant_id}.{table}"


def tenant_group(tenant_id: int) -> str:
    """The group of processes with a socket bound to every table of a tenant."""
    return f"herald.t{tenant_id}"


def topic_group(tenant_id: int, topic: str, *, private: bool) -> str:
    """The group of processes with a socket on a topic (private and public differ).

    Topics are any text, so the group is named by a digest of it.
    """
    digest = hashlib.sha256(topic.encode()).hexdigest()[:40]
    return f"herald.t{tenant_id}.{'p' if private else 'u'}.{digest}"


async def broadcast_send(
    group: str,
    *,
    topic: str,
    payload_json: bytes,
    sender: str = "",
    raw: dict[str, Any] | None = None,
) -> None:
    """A broadcast to a topic's members on every process.

    `payload_json` is the `{type, event, payload}` object, serialized once;
    `raw` carries a binary payload instead (event, payload bytes, meta bytes).
    """
    await layer().group_send(
        group,
        {
            "type": BROADCAST_TYPE,
            "stream": group,
            "topic": topic,
            "payload": payload_json,
            "sender": sender,
            "raw": raw,
        },
    )


async def presence_send(group: str, *, topic: str, diff: dict[str, Any]) -> None:
    await layer().group_send(
        group,
        {
            "type": PRESENCE_TYPE,
            "stream": group,
            "topic": topic,
            "diff": orjson.dumps(diff),
        },
    )


def disconnect_send(
    *,
    reason: str,
    tenant: int | None = None,
    key: int | None = None,
    connection: str | None = None,
    topic: str | None = None,
) -> None:
    """Tell every process to close the matching sockets (or one channel of one)."""
    message = {
        "type": CONTROL_TYPE,
        "reason": reason,
        "tenant": tenant,
        "key": key,
        "connection": connection,
        "topic": topic,
    }
    layer_sync(layer().group_send, CONTROL_GROUP, message)


def forget_send(*, tenant: int) -> None:
    """Tell every process to drop what it cached of the tenant (keys, issuers,
    settings); no socket is closed."""
    message = {"type": CONTROL_TYPE, "tenant": tenant, "forget_only": True}
    layer_sync(layer().group_send, CONTROL_GROUP, message)


def wake_send(tenant_ids: Sequence[int | None]) -> None:
    """Hint every relay that these tenants (None: some tenant) have new rows."""
    message = {"type": WAKE_TYPE, "tenants": list(tenant_ids)}
    layer_sync(layer().group_send, RELAY_GROUP, message)


def commit_timestamp(update: LiveUpdate) -> str:
    # Supabase's form: UTC, milliseconds, `Z`.
    ts = update.commit_timestamp
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def change_data(update: LiveUpdate) -> dict[str, Any]:
    """The `data` of a postgres_changes frame, plus Herald's cursor as `seq`."""
    data: dict[str, Any] = {
        "schema": "public",
        "table": update.table,
        "commit_timestamp": commit_timestamp(update),
        "type": update.type,
        "columns": update.columns,
        "errors": None,
        "seq": update.pk,
    }
    if update.type != "DELETE":
        data["record"] = update.record
    if update.type != "INSERT" and update.old_record is not None:
        data["old_record"] = update.old_record
    return data


def changes_messages(updates: Sequence[LiveUpdate]) -> list[dict[str, Any]]:
    """The layer messages of one publish, in the order to send them.

    Each change goes to its table's stream and to its tenant's (bindings on
    every table); `stream` tells a process in both which copy this is. A run
    of consecutive changes to one table shares a message, and so does each
    tenant's share of the publish: a socket on several streams still gets
    changes in cursor order. `data` is serialized here, once per change, never
    once per subscriber; at most MAX_CHANGES_PER_MESSAGE share a message.
    """
    runs: list[tuple[str, int, list[tuple[int, bytes]]]] = []
    tenants: dict[int, list[tuple[int, bytes]]] = {}
    for update in updates:
        change = (update.pk, orjson.dumps(change_data(update)))
        group = stream_group(update.tenant_id, update.table)
        if not runs or runs[-1][0] != group:
            runs.append((group, update.tenant_id, []))
        runs[-1][2].append(change)
        tenants.setdefault(update.tenant_id, []).append(change)
    runs += [(tenant_group(t), t, changes) for t, changes in tenants.items()]
    return [
        {
            "type": CHANGES_TYPE,
            "stream": group,
            "tenant": tenant_id,
            "seqs": [seq for seq, _ in chunk],
            "data": [data for _, data in chunk],
        }
        for group, tenant_id, changes in runs
        for chunk in (
            changes[i : i + MAX_CHANGES_PER_MESSAGE]
            for i in range(0, len(changes), MAX_CHANGES_PER_MESSAGE)
        )
    ]


def changes_send(updates: Sequence[LiveUpdate]) -> None:
    """Send a publish's changes to their streams; runs after commit."""
    layer_sync(_changes_send, changes_messages(updates))


async def _changes_send(messages: list[dict[str, Any]]) -> None:
    channel_layer = layer()
    if isinstance(channel_layer, RedisChannelLayer) and channel_layer.ring_size == 1:
        # One token for both tries: a first try that reached Redis before its
        # connection failed makes the second a no-op (no change sent twice).
        token = uuid.uuid4().hex
        try:
            await group_send_all(channel_layer, messages, token=token)
        except RedisConnectionError as exc:
            logger.warning("Changes not sent (%s); trying once more", exc)
            await asyncio.sleep(SEND_RETRY_PAUSE)
            await group_send_all(channel_layer, messages, token=token)
        return
    for message in messages:
        await channel_layer.group_send(message["stream"], message)


# Round trip 1: the live members of every group (expired ones dropped first).
_MEMBERS_SCRIPT = """
local members = {}
for i = 1, #KEYS do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, ARGV[1])
    members[i] = redis.call('ZRANGE', KEYS[i], 0, -1)
end
return members
"""
# Round trip 2: channels-redis's group_send script, for every message at once;
# expired messages dropped first, as its sender does in a pipeline of its own.
# The last key is the send's token: a send whose token is there already was
# done (a retry after a lost reply) and is not done again.
_SEND_SCRIPT = """
local n = #KEYS - 1
local expiry, cutoff = ARGV[3 * n + 1], ARGV[3 * n + 2]
if not redis.call('SET', KEYS[n + 1], 1, 'NX', 'EX', expiry) then
    return -1
end
local over_capacity = 0
for i = 1, n do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, cutoff)
    if redis.call('ZCOUNT', KEYS[i], '-inf', '+inf') < tonumber(ARGV[n + i]) then
        redis.call('ZADD', KEYS[i], ARGV[2 * n + i], ARGV[i])
        redis.call('EXPIRE', KEYS[i], expiry)
    else
        over_capacity = over_capacity + 1
    end
end
return over_capacity
"""


async def group_send_all(
    channel_layer: RedisChannelLayer, messages: list[dict[str, Any]], *, token: str
) -> None:
    """`group_send` for several messages, each to the group named by its
    `stream`, in two Redis round trips in all (channels-redis takes four per
    message): one reads every group's members, one queues every copy.

    What lands in each channel is what `group_send` would put there (the same
    serialized message, capacity and expiry), so any channels-redis receiver
    reads it; copies for one channel keep the messages' order. One Redis server
    only: the caller falls back to `group_send` for a sharded layer. A token
    queues copies once: a second call with it sends nothing.
    """
    connection = channel_layer.connection(0)
    now = time.time()
    groups = list(dict.fromkeys(message["stream"] for message in messages))
    members = await connection.eval(
        _MEMBERS_SCRIPT,
        len(groups),
        *[channel_layer._group_key(group) for group in groups],
        int(now) - channel_layer.group_expiry,
    )
    channels = {
        group: [name.decode() for name in names]
        for group, names in zip(groups, members, strict=True)
    }
    keys: list[str] = []
    payloads: list[bytes] = []
    capacities: list[int] = []
    scores: list[float] = []
    for n, message in enumerate(messages):
        # {index: keys}, {key: message for it, serialized}, {key: capacity}
        _, serialized, capacity = channel_layer._map_channel_keys_to_connection(
            channels[message["stream"]], message
        )
        keys += serialized
        payloads += serialized.values()
        capacities += capacity.values()
        # Rising per message, a microsecond apart: a channel takes a publish's
        # messages in order, and before whatever is sent after this returns.
        scores += [now + n * 1e-6] * len(serialized)
    if not keys:
        return
    over = await connection.eval(
        _SEND_SCRIPT,
        len(keys) + 1,
        *keys,
        f"{channel_layer.prefix}herald.sent.{token}",
        *payloads,
        *capacities,
        *scores,
        channel_layer.expiry,
        int(now) - int(channel_layer.expiry),
    )
    if over == -1:
        logger.info("Changes of send %s were queued already", token)
    elif over:
        logger.info("%s of %s copies over capacity", over, len(keys))
