"""The authorization callback: a tenant's own endpoint says who a socket is.

For shops whose users have a session and no token (see README,
"Authorization callback"). Herald POSTs what the client sent, signed with the
tenant's callback secret, and the answer gives the principal's `sub`, `role`
and `claims` (and, for a join, allow or deny), valid and cached for a TTL.

Every way the call can fail (time-out, connection error, non-2xx, an answer
too large, not JSON, or not of the documented shape) refuses the socket or the
join with a reason saying which; nothing fails open. The call runs on the
event loop through httpx's async client, bounded in time and size.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import secrets
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any

import httpx
import orjson
from django.http import parse_cookie

from realtime import errors
from realtime.auth import Principal, claims_problem
from realtime.bounds import MAX_NAME_LENGTH, has_control_characters
from realtime.models import AuthCallback, Tenant
from realtime.row_policy import SERVICE_ROLE

SIGNATURE_HEADER = "X-Herald-Signature"
# An answer longer than this is refused unread past the limit.
MAX_ANSWER_BYTES = 16_384
# Cookies a browser sends Herald's host: past this, refused (not truncated).
MAX_COOKIE_BYTES = 8_192
MAX_TOKEN_BYTES = 8_192
# A reason from the callback is shown to the client, cut to this length.
MAX_REASON_LENGTH = 200
# Answers kept per process, the oldest dropped first.
CACHE_SIZE = 10_000

CONNECT = "connect"
JOIN = "join"


class CallbackRefused(errors.AuthError):
    """The callback denied, or could not be asked: either way, refused."""

    code = "callback_refused"
    default_message = "The authorization callback refused the request"


@dataclass(frozen=True, slots=True)
class CallbackConfig:
    """A snapshot of a tenant's callback, read with the socket's key."""

    tenant_id: int
    url: str
    secret: str
    on_join: bool
    timeout: float
    default_ttl: int
    max_ttl: int

    @classmethod
    def of(cls, row: AuthCallback) -> CallbackConfig:
        return cls(
            tenant_id=row.tenant_id,
            url=row.url,
            secret=row.secret,
            on_join=row.on_join,
            timeout=row.timeout,
            default_ttl=row.default_ttl,
            max_ttl=row.max_ttl,
        )


@dataclass(frozen=True, slots=True)
class CallbackRequest:
    """What the client sent that the callback is told: all of it, unchanged."""

    kind: str
    token: str | None
    cookie_header: str
    topic: str | None
    ip: str | None


@dataclass(frozen=True, slots=True)
class Answer:
    sub: str
    role: str
    claims: dict[str, Any]
    ttl: int


def secret_generate() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def callback_config_of(principal: Principal) -> CallbackConfig | None:
    """The tenant's callback, when this connection is one it applies to.

    It applies to a socket that presents a publishable key as its apikey (a
    browser of the shop's site, not the shop's servers), and only when the
    key's query loaded the callback with the tenant (realtime.auth), so no
    query runs here, on the event loop.
    """
    if principal.key_id is None or principal.role != "anon":
        return None
    tenant = principal.tenant
    if not Tenant.auth_callback.is_cached(tenant):  # type: ignore[attr-defined]
        return None
    row = getattr(tenant, "auth_callback", None)
    return CallbackConfig.of(row) if row is not None else None


def cookie_header_of(scope: dict[str, Any]) -> str:
    """The handshake's Cookie headers, joined as a browser would send one."""
    values = [
        value.decode("latin-1")
        for name, value in scope.get("headers") or []
        if name.lower() == b"cookie"
    ]
    return "; ".join(values)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The header's value: `t=<unix seconds>,v1=<hex HMAC-SHA256>`.

    The MAC covers `<timestamp>.` followed by the exact body bytes, so the
    receiver can refuse replays older than its tolerance.
    """
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def request_body(config: CallbackConfig, slug: str, request: CallbackRequest) -> bytes:
    return orjson.dumps(
        {
            "type": request.kind,
            "tenant": slug,
            "topic": request.topic,
            "token": request.token,
            "cookies": parse_cookie(request.cookie_header),
            "ip": request.ip,
        }
    )


# --- The cache --------------------------------------------------------------------

_cache: OrderedDict[str, tuple[float, Principal]] = OrderedDict()


def _cache_key(config: CallbackConfig, request: CallbackRequest, key_id: int) -> str:
    # The key too: the principal keeps it, and revoking it closes its sockets.
    material = orjson.dumps(
        [
            config.tenant_id,
            key_id,
            config.url,
            request.kind,
            request.topic,
            request.token,
            request.cookie_header,
        ]
    )
    return hashlib.sha256(material).hexdigest()


def _cached(key: str) -> Principal | None:
    entry = _cache.get(key)
    if entry is None:
        return None
    if time.time() >= entry[0]:
        del _cache[key]
        return None
    return entry[1]


def _remember(key: str, principal: Principal) -> None:
    _cache[key] = (principal.exp or 0.0, principal)
    _cache.move_to_end(key)
    while len(_cache) > CACHE_SIZE:
        _cache.popitem(last=False)


def cache_clear() -> None:
    _cache.clear()


# --- Asking -----------------------------------------------------------------------

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
    weakref.WeakKeyDictionary()
)


def _client() -> httpx.AsyncClient:
    """One pooled client per event loop (connections to the shop are reused)."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = httpx.AsyncClient(follow_redirects=False, trust_env=False)
        _clients[loop] = client
    return client


async def callback_principal(
    *, config: CallbackConfig, tenant: Tenant, request: CallbackRequest, base: Principal
) -> Principal:
    """The principal the callback answers for `request`, from cache if fresh.

    `base` is the connection's key principal: the answer's principal keeps its
    key (a revoked key still closes the socket). Raises CallbackRefused.
    """
    _bound_inputs(request)
    key = _cache_key(config, request, base.key_id or 0)
    cached = _cached(key)
    if cached is not None:
        return replace(cached, tenant=tenant)
    answer = _answer_read(await _ask(config, tenant.slug, request), config)
    exp = time.time() + answer.ttl
    claims = {**answer.claims, "role": answer.role, "exp": exp}
    if answer.sub:
        claims["sub"] = answer.sub
    principal = replace(
        base,
        tenant=tenant,
        role=answer.role,
        claims=claims,
        exp=exp,
        via_callback=request.kind,
    )
    _remember(key, principal)
    return principal


def _bound_inputs(request: CallbackRequest) -> None:
    if len(request.cookie_header) > MAX_COOKIE_BYTES:
        raise CallbackRefused(
            f"The cookies sent are over {MAX_COOKIE_BYTES} bytes; "
            "the authorization callback was not asked"
        )
    if request.token is not None and len(request.token) > MAX_TOKEN_BYTES:
        raise CallbackRefused(
            f"The token is over {MAX_TOKEN_BYTES} bytes; "
            "the authorization callback was not asked"
        )


async def _ask(config: CallbackConfig, slug: str, request: CallbackRequest) -> bytes:
    """POST the signed request; the answer's body, bounded in time and size."""
    body = request_body(config, slug, request)
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: signature(config.secret, int(time.time()), body),
        "User-Agent": "Herald-Auth-Callback/1",
    }
    try:
        # One deadline for all of it: a server trickling its answer byte by
        # byte is cut off as surely as one that never answers.
        async with asyncio.timeout(config.timeout):
            async with _client().stream(
                "POST",
                config.url,
                content=body,
                headers=headers,
                timeout=config.timeout,
            ) as response:
                if not 200 <= response.status_code < 300:
                    raise CallbackRefused(
                        "The authorization callback answered HTTP "
                        f"{response.status_code}"
                    )
                return await _bounded_body(response)
    except (TimeoutError, httpx.TimeoutException) as exc:
        # Whichever deadline fires first, asyncio's or one of httpx's own.
        raise CallbackRefused(
            f"The authorization callback did not answer within {config.timeout:g} s"
        ) from exc
    except httpx.HTTPError as exc:
        raise CallbackRefused(
            f"The authorization callback could not be reached ({type(exc).__name__})"
        ) from exc


async def _bounded_body(response: httpx.Response) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_ANSWER_BYTES:
        raise _too_large()
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise _too_large()
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large() -> CallbackRefused:
    return CallbackRefused(
        f"The authorization callback's answer is over {MAX_ANSWER_BYTES} bytes"
    )


def _malformed(why: str) -> CallbackRefused:
    return CallbackRefused(f"The authorization callback's answer is invalid: {why}")


def _answer_read(raw: bytes, config: CallbackConfig) -> Answer:
    """The answer, checked field by field; anything unexpected refuses."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _malformed("not JSON") from exc
    if not isinstance(data, dict):
        raise _malformed("not a JSON object")
    allow = data.get("allow")
    if allow is not True:
        if allow is False:
            raise CallbackRefused(_denial(data.get("reason")))
        raise _malformed("`allow` must be true or false")
    return Answer(
        sub=_sub(data.get("sub")),
        role=_role(data.get("role")),
        claims=_claims(data.get("claims")),
        ttl=_ttl(data.get("ttl"), config),
    )


def _denial(reason: object) -> str:
    text = "The authorization callback denied access"
    if isinstance(reason, str) and reason.strip():
        cleaned = "".join(c if c.isprintable() else " " for c in reason).strip()
        text += f": {cleaned[:MAX_REASON_LENGTH]}"
    return text


def _sub(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _malformed("`sub` must be a string or an integer")
    sub = str(value)
    if len(sub) > MAX_NAME_LENGTH or has_control_characters(sub):
        raise _malformed(
            f"`sub` is at most {MAX_NAME_LENGTH} characters, no control characters"
        )
    return sub


def _role(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > 63:
        raise _malformed("`role` must be a non-empty string of at most 63 characters")
    if value == SERVICE_ROLE:
        # service_role bypasses row policies: only the tenant's secret key may.
        raise _malformed("`role` may not be service_role")
    return value


def _claims(value: object) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _malformed("`claims` must be an object")
    if problem := claims_problem(value):
        raise _malformed(f"`claims` are not plain JSON: {problem}")
    return value


def _ttl(value: object, config: CallbackConfig) -> int:
    if value is None:
        return min(config.default_ttl, config.max_ttl)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 1
    ):
        raise _malformed("`ttl` must be a number of seconds, at least 1")
    return int(min(value, config.max_ttl))
