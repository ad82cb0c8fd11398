"""The client's address, for HTTP requests and WebSocket scopes alike.

By default it is the peer of the TCP connection. Behind a reverse proxy every
peer is the proxy, so HERALD_TRUSTED_PROXIES (comma-separated addresses and
networks) names the proxies whose `X-Forwarded-For` is believed: when the peer
is one of them, the header is read from the right (each proxy appends the
address it saw), trusted addresses are skipped, and the first untrusted one is
the client. Anything left of it was written by the client and may be forged.
A malformed hop makes the header worthless: the peer is used instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network


@lru_cache(maxsize=4)
def trusted_networks(spec: str) -> tuple[Network, ...]:
    """HERALD_TRUSTED_PROXIES parsed; a bad entry stops the server at once."""
    try:
        return tuple(
            ip_network(part.strip(), strict=False)
            for part in spec.split(",")
            if part.strip()
        )
    except ValueError as exc:
        raise ImproperlyConfigured(f"HERALD_TRUSTED_PROXIES: {exc}") from exc


def _address(text: str) -> Address | None:
    try:
        address = ip_address(text.strip())
    except ValueError:
        return None
    # A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d.
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address


def _trusted(address: Address, networks: Iterable[Network]) -> bool:
    return any(address in network for network in networks)


def resolve_client_ip(peer: str | None, forwarded_for: str | None) -> str | None:
    """The client's address from the peer's and its `X-Forwarded-For` header."""
    address = _address(peer) if peer else None
    if address is None:
        return None  # no peer, or not an IP one (a UNIX socket)
    networks = trusted_networks(settings.HERALD_TRUSTED_PROXIES)
    if not forwarded_for or not _trusted(address, networks):
        return str(address)
    client = address
    for hop in reversed(forwarded_for.split(",")):
        hop_address = _address(hop)
        if hop_address is None:
            return str(address)
        client = hop_address
        if not _trusted(client, networks):
            break
    # Every hop trusted: the leftmost is as far back as anyone can tell.
    return str(client)


def request_client_ip(request: Any) -> str | None:
    """For a Django HttpRequest or a DRF Request (which proxies `META`)."""
    meta: Mapping[str, str] = request.META
    return resolve_client_ip(meta.get("REMOTE_ADDR"), meta.get("HTTP_X_FORWARDED_FOR"))


def scope_client_ip(scope: Mapping[str, Any]) -> str | None:
    """For an ASGI scope: its `client` and its `headers` (read before cleared)."""
    client = scope.get("client")
    forwarded = [
        value.decode("latin-1")
        for name, value in scope.get("headers") or ()
        if name.lower() == b"x-forwarded-for"
    ]
    return resolve_client_ip(client[0] if client else None, ",".join(forwarded))


def is_loopback(ip: str | None) -> bool:
    address = _address(ip) if ip else None
    return address is not None and address.is_loopback
