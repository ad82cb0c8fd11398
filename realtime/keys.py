"""API key material: generation and hashing. Only hashes are ever stored."""

import hashlib
import secrets

PUBLISHABLE_PREFIX = "pk_"
SECRET_PREFIX = "sk_"
PREFIX_SHOWN = 10


def key_generate(*, secret: bool) -> str:
    return (SECRET_PREFIX if secret else PUBLISHABLE_PREFIX) + secrets.token_urlsafe(32)


def key_hash(raw: str) -> str:
    # Keys carry 256 random bits, so a plain SHA-256 is enough: there is nothing
    # for a salt or a slow hash to protect against (as GitHub tokens).
    return hashlib.sha256(raw.encode()).hexdigest()


def looks_like_key(raw: str) -> bool:
    return raw.startswith((PUBLISHABLE_PREFIX, SECRET_PREFIX))


def jwt_secret_generate() -> str:
    return secrets.token_urlsafe(48)
