"""Public keys of trusted issuers: parsing JWKS and PEM, fetching and caching JWKS.

Keys are cached per issuer of a tenant, `(tenant id, issuer id, url)`, and
looked up by `kid` within that entry only: a kid is an issuer's own label, so a
cache keyed by kid alone lets one issuer's token pick another issuer's key
(the JWKS-cache flaw behind CVE-2026-49998 in Centrifugo).

A fetch runs in the calling thread, which is never the event loop: the socket
and REST paths resolve tokens through `database_sync_to_async`. One lock per
issuer makes concurrent joins wait for a single fetch instead of each starting
one, and an unknown kid refetches at most once per `REFRESH_INTERVAL`.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
ASYMMETRIC_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "ES256",
    "ES384",
    "EdDSA",
)
# Which algorithms a key of each kind verifies: the key decides, never the
# token's header alone. `oct` (symmetric) keys are never taken from a JWKS.
ALGORITHMS_BY_KIND: dict[tuple[str, str], frozenset[str]] = {
    ("RSA", ""): frozenset({"RS256", "RS384", "RS512", "PS256"}),
    ("EC", "P-256"): frozenset({"ES256"}),
    ("EC", "P-384"): frozenset({"ES384"}),
    ("OKP", "Ed25519"): frozenset({"EdDSA"}),
    ("OKP", "Ed448"): frozenset({"EdDSA"}),
}

CURVES = {"secp256r1": "P-256", "secp384r1": "P-384"}

CONNECT_TIMEOUT = 2.0
FETCH_TIMEOUT = 5.0  # the whole fetch, checked between chunks
# Each wait for bytes: a server that stalls before answering is given up on
# within CONNECT_TIMEOUT + READ_TIMEOUT = FETCH_TIMEOUT; one that trickles, at
# the first chunk past FETCH_TIMEOUT (at worst READ_TIMEOUT later).
READ_TIMEOUT = FETCH_TIMEOUT - CONNECT_TIMEOUT
MAX_JWKS_BYTES = 1_000_000
MAX_KEYS = 100
REFRESH_INTERVAL = 30.0  # at most one fetch per issuer in this many seconds
KEYS_MAX_AGE = 600.0  # fetched keys are refetched after this long

PEM_RE = re.compile(r"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.DOTALL)


class KeysInvalid(ValueError):
    """Text or a document that is not a usable set of public keys."""


class JwksUnavailable(Exception):
    """The issuer's JWKS could not be fetched or read; nothing verifies."""


@dataclass(frozen=True, slots=True)
class PublicKey:
    kid: str | None
    kind: tuple[str, str]
    key: Any
    alg: str | None = None

    def verifies(self, alg: str) -> bool:
        if self.alg is not None and self.alg != alg:
            return False
        return alg in ALGORITHMS_BY_KIND.get(self.kind, frozenset())


def _kind_of(key: Any) -> tuple[str, str]:
    if isinstance(key, rsa.RSAPublicKey):
        return ("RSA", "")
    if isinstance(key, ec.EllipticCurvePublicKey):
        return ("EC", CURVES.get(key.curve.name, ""))
    if isinstance(key, ed25519.Ed25519PublicKey):
        return ("OKP", "Ed25519")
    if isinstance(key, ed448.Ed448PublicKey):
        return ("OKP", "Ed448")
    raise KeysInvalid(f"Unsupported public key type {type(key).__name__}")


def _from_jwk(data: Any) -> PublicKey | None:
    """One JWK, or None for keys that are not for signatures (`use: enc`)."""
    if not isinstance(data, dict) or data.get("use", "sig") != "sig":
        return None
    if data.get("kty") not in {"RSA", "EC", "OKP"} or "d" in data:
        raise KeysInvalid("A JWKS may hold only RSA, EC and OKP public keys")
    try:
        key = jwt.PyJWK(data).key
    except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
        raise KeysInvalid(f"Unusable key in the JWKS: {exc}") from exc
    kid, alg = data.get("kid"), data.get("alg")
    return PublicKey(
        kid=kid if isinstance(kid, str) else None,
        kind=_kind_of(key),
        key=key,
        alg=alg if isinstance(alg, str) else None,
    )


def parse_jwks(raw: bytes | str) -> list[PublicKey]:
    """The signing keys of a JWKS document `{"keys": [...]}`."""
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise KeysInvalid("The JWKS is not JSON") from exc
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list) or len(entries) > MAX_KEYS:
        raise KeysInvalid('The JWKS must be {"keys": [...]} with at most 100 keys')
    keys = [key for key in map(_from_jwk, entries) if key is not None]
    if not keys:
        raise KeysInvalid("The JWKS holds no signing key")
    return keys


def parse_static_keys(text: str) -> list[PublicKey]:
    """Keys given inline: a JWKS document, or one or more PEM public keys."""
    if text.lstrip().startswith("{"):
        return parse_jwks(text)
    blocks = PEM_RE.findall(text)
    if not blocks:
        raise KeysInvalid("Expected a JWKS or PEM public keys (BEGIN PUBLIC KEY)")
    keys = []
    for block in blocks[:MAX_KEYS]:
        try:
            key = load_pem_public_key(block.encode())
        except ValueError as exc:
            raise KeysInvalid(f"Unreadable PEM public key: {exc}") from exc
        keys.append(PublicKey(kid=None, kind=_kind_of(key), key=key))
    return keys


def fetch_jwks(url: str) -> list[PublicKey]:
    """GET a JWKS: bounded in time and size; any failure is JwksUnavailable."""
    deadline = time.monotonic() + FETCH_TIMEOUT
    timeout = httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)
    body = bytearray()
    try:
        with httpx.stream("GET", url, timeout=timeout, follow_redirects=False) as resp:
            if resp.status_code != 200:
                raise JwksUnavailable(f"the JWKS URL answered {resp.status_code}")
            # Without a chunk size: each read as it arrives, so the checks run
            # between reads (a size would buffer up to it, deadline or not).
            for chunk in resp.iter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise JwksUnavailable("the JWKS is larger than 1 MB")
                if time.monotonic() > deadline:
                    raise JwksUnavailable("the JWKS took longer than 5 s")
    except httpx.TimeoutException as exc:
        raise JwksUnavailable("the JWKS URL timed out") from exc
    except httpx.HTTPError as exc:
        raise JwksUnavailable(f"the JWKS URL failed: {type(exc).__name__}") from exc
    try:
        return parse_jwks(bytes(body))
    except KeysInvalid as exc:
        raise JwksUnavailable(f"the JWKS is invalid: {exc}") from exc


CacheKey = tuple[int, int, str]


@dataclass(slots=True)
class _Entry:
    keys: list[PublicKey] = field(default_factory=list)
    fetched_at: float = -1e18  # when `keys` were fetched; never yet
    tried_at: float = -1e18  # the last fetch, failed or not
    error: str = ""  # why the last fetch failed, if it did
    lock: threading.Lock = field(default_factory=threading.Lock)


class KeyCache:
    """Fetched JWKS per `(tenant id, issuer id, url)`; thread-safe."""

    def __init__(self) -> None:
        self._entries: dict[CacheKey, _Entry] = {}
        self._guard = threading.Lock()

    def clear(self) -> None:
        with self._guard:
            self._entries.clear()

    def keys(self, cache_key: CacheKey, *, kid: str | None) -> list[PublicKey]:
        """The issuer's keys, refetched when stale or when `kid` is unknown."""
        with self._guard:
            entry = self._entries.setdefault(cache_key, _Entry())
        if self._wants_fetch(entry, kid):
            # One fetch per issuer at a time: concurrent joins wait for it, then
            # find the keys it brought (or its recent attempt) and do not refetch.
            with entry.lock:
                if self._wants_fetch(entry, kid):
                    self._refresh(entry, cache_key[2])
        missing = not entry.keys or (kid is not None and not _has_kid(entry.keys, kid))
        if missing and entry.error:
            raise JwksUnavailable(entry.error)
        return entry.keys

    def ready(self, cache_key: CacheKey, *, kid: str | None) -> bool:
        """Whether `keys` would answer now, without a fetch and without error."""
        with self._guard:
            entry = self._entries.get(cache_key)
        if entry is None or not entry.keys or self._wants_fetch(entry, kid):
            return False
        return kid is None or _has_kid(entry.keys, kid)

    @staticmethod
    def _wants_fetch(entry: _Entry, kid: str | None) -> bool:
        now = time.monotonic()
        if now - entry.tried_at < REFRESH_INTERVAL:
            return False
        stale = now - entry.fetched_at >= KEYS_MAX_AGE
        return stale or (kid is not None and not _has_kid(entry.keys, kid))

    @staticmethod
    def _refresh(entry: _Entry, url: str) -> None:
        # `tried_at` is set once the fetch is over, so that those waiting on
        # the lock find it recent and take its result rather than refetching.
        try:
            entry.keys = fetch_jwks(url)
        except JwksUnavailable as exc:
            entry.error = str(exc)
            # Old keys do not outlive their age: a JWKS that cannot be fetched
            # lets no token through once what was fetched before is stale.
            if time.monotonic() - entry.fetched_at >= KEYS_MAX_AGE:
                entry.keys = []
        else:
            entry.fetched_at, entry.error = time.monotonic(), ""
        entry.tried_at = time.monotonic()


def _has_kid(keys: Iterable[PublicKey], kid: str) -> bool:
    return any(key.kid == kid for key in keys)


key_cache = KeyCache()
