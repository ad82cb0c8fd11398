"""The naive Channels design, only for `make bench` to compare Herald against.

Every socket is its own member of the (tenant, table) stream group, so a change
reaches the process once per socket, and every socket decodes the change,
checks its bindings and the row policy, and encodes its own frame. It serves
the subset of the wire protocol the load generator speaks: heartbeat,
`phx_join` with postgres_changes bindings, `phx_leave`, deliveries.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import orjson
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from realtime import errors
from realtime.auth import Principal, principal_from_apikey
from realtime.bindings import (
    Binding,
    binding_matches,
    join_reply_entries,
    parse_bindings,
)
from realtime.layer import stream_group
from realtime.protocol import (
    HEARTBEAT,
    PHOENIX_TOPIC,
    PHX_JOIN,
    PHX_LEAVE,
    POSTGRES_CHANGES,
    Codec,
    Message,
    ProtocolError,
    codec_for_vsn,
    push,
    reply,
)
from realtime.row_policy import row_visible
from realtime.selectors import Rules, row_policy_rules

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Join:
    """One joined channel of this socket, with the policies read at join time."""

    topic: str
    bindings: list[Binding]
    policies: dict[str, dict[str, Rules]]  # table -> role -> rules


class NaiveConsumer(AsyncWebsocketConsumer):
    """One group membership and one `group_send` delivery per socket."""

    async def connect(self) -> None:
        query = parse_qs(self.scope["query_string"].decode("latin-1"))
        self.codec: Codec | None = codec_for_vsn(_first(query, "vsn"))
        self.joins: dict[str, Join] = {}
        self.streams: set[str] = set()
        try:
            self.principal: Principal = await database_sync_to_async(
                principal_from_apikey
            )(_first(query, "apikey"))
        except errors.HeraldError:
            await self.close()
            return
        if self.codec is None:
            await self.close()
            return
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "streams", ()):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None
    ) -> None:
        if text_data is None or self.codec is None:
            return
        try:
            msg = self.codec.decode_text(text_data)
        except ProtocolError:
            return
        if msg.topic == PHOENIX_TOPIC and msg.event == HEARTBEAT:
            await self._send(reply(PHOENIX_TOPIC, msg.ref, None, "ok", {}))
        elif msg.event == PHX_JOIN:
            await self._join(msg)
        elif msg.event == PHX_LEAVE:
            self.joins.pop(msg.topic, None)
            await self._send(reply(msg.topic, msg.ref, msg.join_ref, "ok", {}))

    async def stream_changes(self, message: dict[str, Any]) -> None:
        # The point of this design: every socket decodes, matches and encodes
        # each change for itself, and sends each frame on its own.
        for data_json in message["data"]:
            await self._change(orjson.loads(data_json))

    async def _change(self, data: dict[str, Any]) -> None:
        change, table = data["type"], data["table"]
        row = data.get("old_record") if change == "DELETE" else data.get("record")
        for join in self.joins.values():
            ids = [
                b.id
                for b in join.bindings
                if binding_matches(
                    b,
                    table=table,
                    change_type=change,
                    record=data.get("record"),
                    old_record=data.get("old_record"),
                )
            ]
            if ids and self._may_see(join, table, row):
                payload = {"ids": ids, "data": data}
                await self._send(push(join.topic, POSTGRES_CHANGES, payload))

    async def _join(self, msg: Message) -> None:
        payload = msg.payload if isinstance(msg.payload, dict) else {}
        config = payload.get("config") or {}
        bindings, _ = parse_bindings(config.get("postgres_changes"))
        tenant_id = self.principal.tenant.pk
        tables = {b.table for b in bindings if b.table is not None and not b.error}
        policies = {}
        for table in tables:
            policies[table] = await database_sync_to_async(row_policy_rules)(
                tenant_id=tenant_id, table=table
            )
            group = stream_group(tenant_id, table)
            if group not in self.streams:
                await self.channel_layer.group_add(group, self.channel_name)
                self.streams.add(group)
        self.joins[msg.topic] = Join(msg.topic, bindings, policies)
        response = {"postgres_changes": join_reply_entries(bindings)}
        await self._send(reply(msg.topic, msg.ref, msg.join_ref, "ok", response))

    def _may_see(self, join: Join, table: str, row: Any) -> bool:
        rules = join.policies.get(table, {}).get(self.principal.role, [])
        return row_visible(
            role=self.principal.role,
            policies=rules,
            row=row,
            claims=self.principal.claims,
        )

    async def _send(self, msg: Message) -> None:
        assert self.codec is not None
        await self.send(text_data=self.codec.encode(msg))


def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None
