"""The authorization callback on a socket: when it is asked, and what for.

- Connect: a socket whose apikey is the tenant's publishable key, on a tenant
  with a callback, is whoever the callback says (`type: "connect"`), told the
  socket's Cookie header and its `access_token` query parameter, if any.
  Asked once the socket is accepted; refused, each join without a token of its
  own asks again and, refused again, is answered with the reason.
- Join: with `on_join`, each join of a private channel asks too (`type:
  "join"`, with the topic and the join's token), and the answer's principal
  is the channel's; allowed, the channel may read broadcasts and presence.
- Lapse: at the answer's TTL the callback is asked again (the cache has
  lapsed with it); refused then, the channel is closed with the reason.

A join whose token is a JWT is verified as any other token; a publishable key
given as a join's token means "the connection's principal", as with no token.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from audit.models import EventType
from realtime.auth import Principal
from realtime.auth_callback import (
    CONNECT,
    JOIN,
    CallbackConfig,
    CallbackRefused,
    CallbackRequest,
    callback_config_of,
    callback_principal,
    cookie_header_of,
)
from realtime.db import best_effort
from realtime.hub import hub
from realtime.keys import PUBLISHABLE_PREFIX
from realtime.services.sockets import refusal_record

if TYPE_CHECKING:
    from realtime.channel import JoinedChannel


class CallbackMixin:
    principal: Principal
    ip: str | None
    scope: dict[str, Any]
    callback: CallbackConfig | None = None
    callback_refusal: CallbackRefused | None = None
    _callback_key: Principal
    _callback_cookies: str = ""
    _callback_token: str | None = None

    async def shut(self, channel: JoinedChannel, reason: str) -> None:
        raise NotImplementedError

    def _schedule_expiry(self, channel: JoinedChannel) -> None:
        raise NotImplementedError

    def callback_prepare(self, opened: Principal) -> None:
        """Read what the callback will be told, while the handshake's headers
        are still there. `opened` is the key's principal as the database
        returned it (with the tenant's callback, if any)."""
        self.callback = callback_config_of(opened)
        if self.callback is None:
            return
        self._callback_key = self.principal
        self._callback_cookies = cookie_header_of(self.scope)
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        self._callback_token = (query.get("access_token") or [None])[0]

    async def callback_connect(self) -> None:
        """Ask the callback who this socket is, if the tenant has one.

        Runs once the socket is accepted: daphne drops a handshake that takes
        more than 5 s, and a refused socket hears why on its joins. Frames
        that arrive meanwhile wait, as Channels handles one at a time.
        """
        if self.callback is None:
            return
        try:
            self.principal = await self._callback_ask(CONNECT)
        except CallbackRefused as exc:
            self.callback_refusal = exc
            await self._callback_record(exc, EventType.AUTH_FAILED, "")

    def callback_join_token(self, token: str | None) -> str | None:
        """A publishable key as a join's token stands for the connection."""
        if self.callback is not None and token and token.startswith(PUBLISHABLE_PREFIX):
            return None
        return token

    async def callback_connection(self) -> Principal:
        """The connection's principal, asked again if refused or lapsed."""
        if self.callback is None:
            return self.principal
        if self.callback_refusal is None and (self.principal.exp or 0) > time.time():
            return self.principal
        try:
            self.principal = await self._callback_ask(CONNECT)
        except CallbackRefused as exc:
            self.callback_refusal = exc
            raise
        self.callback_refusal = None
        return self.principal

    async def callback_join(
        self, principal: Principal, sub_topic: str, token: str | None
    ) -> Principal | None:
        """The principal the callback answers for a private join; None when
        the tenant does not ask on joins. Raises CallbackRefused."""
        if self.callback is None or not self.callback.on_join:
            return None
        return await self._callback_ask(
            JOIN, topic=sub_topic, token=token, base=principal
        )

    async def callback_renew(self, channel: JoinedChannel) -> None:
        """The callback's answer for a channel lapsed: ask again, or close it."""
        try:
            if channel.principal.via_callback == JOIN:
                principal = await self._callback_ask(
                    JOIN,
                    topic=channel.sub_topic,
                    token=channel.token,
                    base=channel.principal,
                )
            else:
                principal = await self.callback_connection()
        except CallbackRefused as exc:
            await self._callback_record(exc, EventType.TOKEN_EXPIRED, channel.topic)
            await self.shut(channel, exc.reason)
            return
        channel.principal = principal
        if channel.member is not None:
            await hub().replace_principal(channel.member, principal)
        self._schedule_expiry(channel)

    async def _callback_ask(
        self,
        kind: str,
        *,
        topic: str | None = None,
        token: str | None = None,
        base: Principal | None = None,
    ) -> Principal:
        assert self.callback is not None
        request = CallbackRequest(
            kind=kind,
            token=token if kind == JOIN else self._callback_token,
            cookie_header=self._callback_cookies,
            topic=topic,
            ip=self.ip,
        )
        return await callback_principal(
            config=self.callback,
            tenant=self.principal.tenant,
            request=request,
            base=base or self._callback_key,
        )

    async def _callback_record(
        self, exc: CallbackRefused, event_type: EventType, target: str
    ) -> None:
        await best_effort(
            refusal_record,
            event_type=event_type,
            reason=exc.message,
            principal=self.principal,
            target=target,
            ip=self.ip,
        )
