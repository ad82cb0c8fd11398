"""Webhook delivery of durable subscriptions: signed POSTs, in order, retried.

Run by `manage.py realtime_maintenance`. Each change is one POST; the cursor
only moves past a change once its receiver answered 2xx, so delivery is
at-least-once and `Herald-Delivery-Id` (subscription id and change cursor) lets
a receiver drop a repeat. Several workers may run: a subscription is claimed
with `SELECT … FOR UPDATE SKIP LOCKED` and its cursor is saved before the lock
is released, so no two workers send the same change.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import random
import socket
import time
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import httpx
import orjson
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from realtime import errors
from realtime.change_log import (
    HORIZON,
    LOG,
    Reader,
    changes_after,
    cursor_check,
    ordered_by_commit,
)
from realtime.layer import change_data
from realtime.models import LiveUpdate
from subscriptions.models import DurableSubscription
from subscriptions.selectors import subscription_binding

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "Herald-Signature"
DELIVERY_HEADER = "Herald-Delivery-Id"
USER_AGENT = "Herald-Webhook/1"
# Longest one subscription's turn may last; its row is locked meanwhile.
BATCH_SECONDS = 30.0

_SUBSCRIPTION = DurableSubscription._meta.db_table
_CURSOR = f'"{_SUBSCRIPTION}"."cursor"'
_CURSOR_XID = (
    f'(SELECT c.xid FROM "{LOG}" c WHERE c.id = {_CURSOR} '  # noqa: S608
    f'AND c.tenant_id = "{_SUBSCRIPTION}"."tenant_id")'
)
# A change after the subscription's cursor in log order, below the horizon
# (PostgreSQL): realtime.change_log.changes_after's first page, as SQL.
PENDING_SQL = (
    f'EXISTS (SELECT 1 FROM "{LOG}" u WHERE u.tenant_id = '  # noqa: S608
    f'"{_SUBSCRIPTION}"."tenant_id" AND u."table" = "{_SUBSCRIPTION}"."table" '
    f"AND (u.xid, u.id) > (coalesce({_CURSOR_XID}, '0'::xid8), {_CURSOR}) "
    f"AND ({_CURSOR_XID} IS NOT NULL OR u.id > {_CURSOR}) AND u.xid < {HORIZON})"
)


# --- Target URLs ---------------------------------------------------------------


def _address_refused(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def webhook_url_check(url: str) -> str:
    """Refuse a URL that is not http(s), or resolves to a private address.

    Loopback, private, link-local and other non-global addresses are refused
    unless HERALD_WEBHOOK_ALLOW_PRIVATE is on (tests, a receiver on the LAN).
    Returns the address checked: a send must connect to that one, not resolve
    the name again (a name that answers a public address to the check and a
    private one to the connection would otherwise get through).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise errors.InvalidInput("webhook.url: must be an http or https URL")
    if parts.username or parts.password:
        raise errors.InvalidInput("webhook.url: must not carry credentials")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP)
    except (OSError, ValueError, UnicodeError) as exc:
        raise errors.InvalidInput(
            f"webhook.url: {parts.hostname} does not resolve"
        ) from exc
    addresses = [str(info[4][0]) for info in infos]
    if not settings.HERALD_WEBHOOK_ALLOW_PRIVATE and any(
        _address_refused(address) for address in addresses
    ):
        raise errors.InvalidInput(
            "webhook.url: private, loopback and link-local addresses are refused"
        )
    return addresses[0]


def pinned_request(url: str, address: str) -> tuple[str, dict[str, str], dict]:
    """The URL to connect to `address` instead of the name, with its Host and SNI.

    The certificate is still verified against the name (httpx's `sni_hostname`).
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    literal = f"[{address.split('%', 1)[0]}]" if ":" in address else address
    netloc = literal if parts.port is None else f"{literal}:{parts.port}"
    headers = {"Host": parts.netloc.rsplit("@", 1)[-1]}
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    return parts._replace(netloc=netloc).geturl(), headers, extensions


# --- Signing ---------------------------------------------------------------------


def webhook_signature(*, secret: str, timestamp: int, body: bytes) -> str:
    """`t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`."""
    signed = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def delivery_id(subscription: DurableSubscription, update: LiveUpdate) -> str:
    return f"{subscription.pk}-{update.pk}"


def _dumps(value: dict) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # an integer past 64 bits: valid JSON, beyond orjson
        return json.dumps(value, separators=(",", ":"), default=str).encode()


def webhook_request(
    subscription: DurableSubscription, update: LiveUpdate
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one delivery."""
    ident = delivery_id(subscription, update)
    body = _dumps(
        {
            "id": ident,
            "subscription": subscription.pk,
            "channel": subscription.channel,
            "change": change_data(update),
        }
    )
    signature = webhook_signature(
        secret=subscription.webhook_secret, timestamp=int(time.time()), body=body
    )
    return body, {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        SIGNATURE_HEADER: signature,
        DELIVERY_HEADER: ident,
    }


# --- Delivery ----------------------------------------------------------------------


def webhooks_deliver() -> int:
    """One pass: every due webhook subscription gets one batch. Returns changes sent."""
    sent, seen = 0, set[int]()
    while True:
        claimed: int | None = None
        try:
            with transaction.atomic():
                subscription = _claim(exclude=seen)
                if subscription is None:
                    return sent
                claimed = subscription.pk
                seen.add(claimed)
                sent += _deliver_batch(subscription)
        except Exception as exc:
            # One subscription's fault must not stall the others: it backs off.
            logger.exception("Webhook delivery of subscription %s crashed", claimed)
            if claimed is None:
                raise
            _crashed(claimed, f"{type(exc).__name__}: {exc}")


def _claim(*, exclude: set[int]) -> DurableSubscription | None:
    """A due webhook subscription with changes after its cursor, locked for us."""
    due = DurableSubscription.objects.filter(
        delivery=DurableSubscription.Delivery.WEBHOOK,
        state=DurableSubscription.State.ACTIVE,
    )
    if ordered_by_commit():
        # After the cursor's position in log order, below the horizon
        # (realtime/change_log.py).
        due = due.extra(where=[PENDING_SQL])  # noqa: S610 - constant SQL
    else:
        pending = LiveUpdate.objects.filter(
            tenant_id=OuterRef("tenant_id"),
            table=OuterRef("table"),
            pk__gt=OuterRef("cursor"),
        )
        due = due.filter(Exists(pending))
    due = (
        due.filter(
            Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=timezone.now())
        )
        .exclude(pk__in=exclude)
        .order_by(F("next_attempt_at").asc(nulls_first=True), "pk")
    )
    # SQLite has one writer at a time and no row locks: a plain read claims.
    if connection.features.has_select_for_update_skip_locked:
        due = due.select_for_update(skip_locked=True, of=("self",))
    return due.select_related("tenant").first()


def _deliver_batch(subscription: DurableSubscription) -> int:
    try:
        cursor_check(tenant=subscription.tenant, cursor=subscription.cursor)
    except errors.CursorGone as exc:
        _pause(subscription, f"{exc.code}: {exc.message}")
        subscription.save()
        return 0
    reader = Reader(
        tenant_id=subscription.tenant_id,
        role=subscription.role,
        claims=subscription.claims,
    )
    page = changes_after(
        reader=reader,
        after=subscription.cursor,
        limit=settings.HERALD_WEBHOOK_BATCH,
        tables=[subscription.table],
        binding=subscription_binding(subscription),
    )
    sent, error, finished = _send(subscription, page.changes)
    if sent:
        # The receiver took changes: any run of failures is over.
        subscription.failure_count, subscription.last_error = 0, ""
        subscription.next_attempt_at = None
        subscription.delivered_count += sent
        subscription.last_delivered_at = timezone.now()
    if error is not None:
        _failed(subscription, error)
    elif finished:
        # Rows that did not match were read too: the next batch starts after them.
        subscription.cursor = page.next_cursor
        subscription.failure_count, subscription.last_error = 0, ""
        subscription.next_attempt_at = None
    subscription.save()
    return sent


def _send(
    subscription: DurableSubscription, changes: list[LiveUpdate]
) -> tuple[int, str | None, bool]:
    """POST changes in order until one fails: (sent, error, all were tried)."""
    sent = 0
    # The row stays locked while we send: a slow receiver gets a bounded turn.
    deadline = time.monotonic() + BATCH_SECONDS
    with httpx.Client(
        timeout=settings.HERALD_WEBHOOK_TIMEOUT, follow_redirects=False
    ) as client:
        for update in changes:
            if time.monotonic() > deadline:
                return sent, None, False  # the rest on the next turn
            error = _post(client, subscription, update)
            if error is not None:
                return sent, error, False
            subscription.cursor = update.pk
            sent += 1
    return sent, None, True


def _post(
    client: httpx.Client, subscription: DurableSubscription, update: LiveUpdate
) -> str | None:
    """Send one change; None when the receiver took it, else what went wrong."""
    try:
        # Checked again at each send (the name may resolve elsewhere by now),
        # and sent to the address checked, not to a second resolution.
        address = webhook_url_check(subscription.webhook_url)
        url, host, extensions = pinned_request(subscription.webhook_url, address)
        body, headers = webhook_request(subscription, update)
        response = client.post(
            url, content=body, headers={**headers, **host}, extensions=extensions
        )
    except errors.InvalidInput as exc:
        return exc.message
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"[:500]
    if 200 <= response.status_code < 300:
        return None
    return f"HTTP {response.status_code} from the receiver"


def retry_delay(failures: int) -> timedelta:
    """Exponential backoff with jitter: base * 2**(failures-1), capped, * 0.5..1."""
    base = settings.HERALD_WEBHOOK_BACKOFF_BASE
    delay = min(settings.HERALD_WEBHOOK_BACKOFF_MAX, base * 2 ** min(failures - 1, 30))
    return timedelta(seconds=delay * random.uniform(0.5, 1.0))  # noqa: S311


def _failed(
    subscription: DurableSubscription, error: str, now: datetime | None = None
) -> None:
    subscription.failure_count += 1
    subscription.last_error = error[:500]
    subscription.next_attempt_at = (now or timezone.now()) + retry_delay(
        subscription.failure_count
    )
    logger.warning(
        "Webhook of subscription %s failed (%s in a row): %s",
        subscription.pk,
        subscription.failure_count,
        error,
    )
    if subscription.failure_count >= settings.HERALD_WEBHOOK_MAX_FAILURES:
        _pause(subscription, error)


def _crashed(pk: int, error: str) -> None:
    with transaction.atomic():
        subscription = DurableSubscription.objects.select_for_update().get(pk=pk)
        _failed(subscription, error)
        subscription.save()


def _pause(subscription: DurableSubscription, error: str) -> None:
    subscription.state = DurableSubscription.State.PAUSED
    subscription.last_error = error[:500]
    logger.warning("Webhook subscription %s paused: %s", subscription.pk, error)
