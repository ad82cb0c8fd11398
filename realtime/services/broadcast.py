"""Broadcasts from a backend (REST), to a topic's members on every process."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import orjson

from audit.models import EventType
from audit.services import activity_record
from realtime import errors
from realtime.auth import Principal
from realtime.channel_policy import ChannelRule, channel_allowed
from realtime.layer import broadcast_send, layer_sync, topic_group
from realtime.models import Tenant
from realtime.replay import change_feed_table
from realtime.selectors import channel_rules
from realtime.services.replay import broadcasts_store

# Slack over the tenant's limit, as Supabase allows for the envelope.
PAYLOAD_SLACK = 500


def payload_limit(tenant: Any) -> int:
    """Bytes a broadcast may take, measured by `broadcast_size` (socket and REST)."""
    return int(tenant.max_payload_size_kb) * 1000 + PAYLOAD_SLACK


def broadcast_size(event_body: dict[str, Any] | None, raw: bytes | None) -> int:
    """A broadcast's size: its binary payload, or its JSON body with `type`,
    `event` and `payload`, as the socket sends it on."""
    if raw is not None:
        return len(raw)
    return len(orjson.dumps({**(event_body or {}), "type": "broadcast"}))


# realtime-js needs topic and event to fit a binary frame's one-byte lengths.
MAX_FIELD_BYTES = 255


@dataclass(frozen=True, slots=True)
class BroadcastInput:
    topic: str  # the sub-topic, without `realtime:`
    event: str
    payload: Any = None
    raw: bytes | None = None  # a binary payload (vsn 2 clients only)
    private: bool = False
    id: str | None = None


def _frame_parts(message: BroadcastInput) -> tuple[bytes, dict[str, Any] | None]:
    meta = {"id": message.id} if message.id else None
    if message.raw is not None:
        raw = {"event": message.event, "payload": message.raw}
        raw["meta"] = orjson.dumps(meta) if meta else b""
        return b"", raw
    body: dict[str, Any] = {
        "type": "broadcast",
        "event": message.event,
        "payload": message.payload,
    }
    if meta:
        body["meta"] = meta
    return orjson.dumps(body), None


def _check(message: BroadcastInput, limit: int) -> None:
    if len(f"realtime:{message.topic}".encode()) > MAX_FIELD_BYTES:
        raise errors.InvalidInput("topic: longer than 246 bytes")
    if len(message.event.encode()) > MAX_FIELD_BYTES:
        raise errors.InvalidInput("event: longer than 255 bytes")
    body = {"event": message.event, "payload": message.payload}
    if broadcast_size(body, message.raw) > limit:
        raise errors.PayloadTooLarge("Payload size exceeds tenant limit")


def broadcasts_publish(
    *, principal: Principal, messages: list[BroadcastInput], ip: str | None = None
) -> int:
    """Send each message to its topic; private ones need the write policy.

    As in Supabase, a private message the principal may not write is skipped,
    not refused. Returns how many were sent.
    """
    tenant = principal.tenant
    limit = payload_limit(tenant)
    for message in messages:
        _check(message, limit)
    rules: list[ChannelRule] = (
        channel_rules(tenant_id=tenant.pk) if any(m.private for m in messages) else []
    )
    allowed = [
        m
        for m in messages
        if not _change_feed(tenant, m)
        and (
            not m.private
            or channel_allowed(
                rules,
                role=principal.role,
                claims=principal.claims,
                topic=m.topic,
                extension="broadcast",
                action="write",
            )
        )
    ]
    allowed = _stored(tenant, allowed)
    layer_sync(_send_all, tenant.pk, allowed)
    activity_record(
        event_type=EventType.REST_BROADCAST,
        principal=principal,
        target=",".join(sorted({m.topic for m in messages}))[:255],
        ip=ip,
        details={"sent": len(allowed), "skipped": len(messages) - len(allowed)},
    )
    return len(allowed)


def _change_feed(tenant: Tenant, message: BroadcastInput) -> bool:
    """A change feed carries only its table's changes (realtime/replay.py)."""
    return message.private and (
        change_feed_table(message.topic, enabled=tenant.change_feeds, private=True)
        is not None
    )


def _stored(tenant: Tenant, messages: list[BroadcastInput]) -> list[BroadcastInput]:
    """Store the private JSON broadcasts for replay; they carry their id as
    `meta.id` (binary payloads are not stored)."""
    due = [i for i, m in enumerate(messages) if m.private and m.raw is None]
    if not due:
        return messages
    ids = broadcasts_store(
        tenant=tenant,
        messages=[
            (messages[i].topic, messages[i].event, messages[i].payload) for i in due
        ],
    )
    out = list(messages)
    for index, ident in zip(due, ids, strict=True):
        out[index] = replace(out[index], id=str(ident))
    return out


async def _send_all(tenant_id: int, messages: list[BroadcastInput]) -> None:
    for message in messages:
        payload_json, raw = _frame_parts(message)
        await broadcast_send(
            topic_group(tenant_id, message.topic, private=message.private),
            topic=f"realtime:{message.topic}",
            payload_json=payload_json,
            raw=raw,
        )
