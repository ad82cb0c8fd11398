"""A joined channel's state and the join payload's config (docs/protocol.md §4)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from realtime.auth import Principal
from realtime.channel_policy import ChannelRule
from realtime.hub import Member, TopicMember
from realtime.presence import PresenceWindow
from realtime.protocol import SYSTEM, Message, push

TOPIC_PREFIX = "realtime:"


def flexible_bool(value: Any) -> bool:
    """Booleans, or "true"/"false" strings in any case, as Supabase accepts."""
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return value is True


def section(config: dict[str, Any], name: str) -> dict[str, Any]:
    value = config.get(name)
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True, slots=True)
class JoinConfig:
    private: bool
    broadcast_self: bool
    broadcast_ack: bool
    presence_enabled: bool
    presence_key: str
    postgres_changes: Any

    @classmethod
    def parse(cls, payload: Any) -> JoinConfig:
        # Invalid shapes are tolerated: the join proceeds with what parses.
        config = payload.get("config") if isinstance(payload, dict) else None
        config = config if isinstance(config, dict) else {}
        broadcast, presence = section(config, "broadcast"), section(config, "presence")
        key = presence.get("key")
        return cls(
            private=flexible_bool(config.get("private")),
            broadcast_self=flexible_bool(broadcast.get("self")),
            broadcast_ack=flexible_bool(broadcast.get("ack")),
            presence_enabled=flexible_bool(presence.get("enabled")),
            presence_key=key if isinstance(key, str) else "",
            postgres_changes=config.get("postgres_changes"),
        )


def join_token(payload: Any) -> str | None:
    """The join's own token, if it has one Herald should use."""
    if not isinstance(payload, dict):
        return None
    token = payload.get("access_token") or payload.get("user_token")
    # `sb_…` opaque keys mean "use the connection's key", as in Supabase.
    if not isinstance(token, str) or not token.strip() or token.startswith("sb_"):
        return None
    return token


@dataclass(eq=False, slots=True)
class JoinedChannel:
    topic: str
    join_ref: str | None
    principal: Principal
    token: str | None
    config: JoinConfig
    subscription_id: int
    # The topic's group on the layer, and this channel's membership of it.
    room: str
    member_of_topic: TopicMember
    presence_key: str
    # The tenant's channel policies, for a private channel (read at join).
    rules: list[ChannelRule] = field(default_factory=list)
    # Bindings of postgres_changes, when there are any.
    member: Member | None = None
    # What this channel tracks, with its phx_ref; None when not tracking.
    presence_meta: dict[str, Any] | None = None
    # Its presence calls, against Supabase's per-channel client limit.
    presence_calls: PresenceWindow = field(default_factory=PresenceWindow)
    expiry: asyncio.TimerHandle | None = field(default=None, repr=False)

    @property
    def sub_topic(self) -> str:
        return self.topic[len(TOPIC_PREFIX) :]

    def system(self, *, status: str, message: str, extension: str) -> Message:
        payload = {
            "extension": extension,
            "status": status,
            "message": message,
            "channel": self.sub_topic,
        }
        return push(self.topic, SYSTEM, payload, join_ref=self.join_ref)

    def cancel_expiry(self) -> None:
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
