"""The one door to the channel layer: group naming and what goes through it.

A change is published once, to its (tenant, table) stream group. Server
processes join a stream group once each (not once per socket) and fan out to
their own sockets locally. Group names come only from these functions: they
match `^[a-zA-Z0-9._-]+$` and stay under 100 characters.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson
from asgiref.sync import async_to_sync
from channels.layers import BaseChannelLayer, get_channel_layer

if TYPE_CHECKING:
    from realtime.models import LiveUpdate

logger = logging.getLogger(__name__)

# Message types, the routing key of what a process receives (channels' convention).
CHANGE_TYPE = "stream.change"
BROADCAST_TYPE = "topic.broadcast"
PRESENCE_TYPE = "topic.presence"
CONTROL_TYPE = "control.disconnect"
# Every process listens here for orders about its sockets (revoked keys,
# suspended tenants, admin disconnects).
CONTROL_GROUP = "herald.control"


def layer() -> BaseChannelLayer:
    found = get_channel_layer()
    if found is None:
        raise RuntimeError("CHANNEL_LAYERS is not configured")
    return found


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
    async_to_sync(layer().group_send)(CONTROL_GROUP, message)


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


def change_message(update: LiveUpdate) -> dict[str, Any]:
    # `data` is serialized here, once per change, never once per subscriber.
    return {
        "type": CHANGE_TYPE,
        "tenant": update.tenant_id,
        "table": update.table,
        "seq": update.pk,
        "change": update.type,
        "data": orjson.dumps(change_data(update)),
    }


def changes_send(updates: Sequence[LiveUpdate]) -> None:
    """Send one message per change to its stream; runs after commit."""
    send = async_to_sync(_changes_send)
    send(list(updates))


async def _changes_send(updates: list[LiveUpdate]) -> None:
    channel_layer = layer()
    for update in updates:
        message = change_message(update)
        # Sent to the table's stream and to the tenant-wide one (bindings on
        # every table); `stream` tells a process in both which copy this is.
        for group in (
            stream_group(update.tenant_id, update.table),
            tenant_group(update.tenant_id),
        ):
            await channel_layer.group_send(group, {**message, "stream": group})
