"""Test identity providers: key pairs, signed tokens, and a JWKS over HTTP.

`JwksServer` is a tiny http.server on loopback serving whatever JWKS the test
gives it, or misbehaving on purpose: slow, garbage, or an endless 50 MB body.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

ALG_OF = {"RSA": "RS256", "EC": "ES256", "OKP": "EdDSA"}


@dataclass
class KeyPair:
    kty: str
    private: Any
    kid: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    @property
    def alg(self) -> str:
        return ALG_OF[self.kty]

    def jwk(self) -> dict[str, Any]:
        algorithm: Any = {"RSA": RSAAlgorithm, "EC": ECAlgorithm}.get(
            self.kty, OKPAlgorithm
        )
        data = algorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {**data, "kid": self.kid, "use": "sig"}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )

    def sign(self, claims: dict[str, Any], *, kid: str | None = None) -> str:
        return jwt.encode(
            claims, self.private, algorithm=self.alg, headers={"kid": kid or self.kid}
        )


def key_pair(kty: str) -> KeyPair:
    if kty == "RSA":
        return KeyPair(
            kty, rsa.generate_private_key(public_exponent=65537, key_size=2048)
        )
    if kty == "EC":
        return KeyPair(kty, ec.generate_private_key(ec.SECP256R1()))
    return KeyPair(kty, ed25519.Ed25519PrivateKey.generate())


def jwks_of(*pairs: KeyPair) -> bytes:
    return json.dumps({"keys": [pair.jwk() for pair in pairs]}).encode()


def claims(iss: str, *, ttl: int = 300, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": iss, "iat": now, "exp": now + ttl, **extra}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged_hs256(payload: dict[str, Any], secret: bytes, kid: str) -> str:
    """An HS256 token signed with `secret` (e.g. a public key's PEM) by hand.

    PyJWT refuses to do this itself, which is the point: a verifier that takes
    the header's alg and the issuer's key blindly would accept it.
    """
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = _b64(json.dumps(payload).encode())
    signature = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256)
    return f"{header}.{body}.{_b64(signature.digest())}"


def unsigned(payload: dict[str, Any], kid: str) -> str:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": kid}).encode())
    return f"{header}.{_b64(json.dumps(payload).encode())}."


class JwksServer:
    """Serves `body` at /jwks.json; `mode`: ok, slow, garbage, huge or trickle.

    `delay` seconds before any answer; `hits` counts the requests.
    """

    def __init__(self, body: bytes = b'{"keys": []}') -> None:
        self.body, self.mode, self.hits, self.delay = body, "ok", 0, 0.0
        self.stopping = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits += 1
                # A client that gives up early (the 50 MB body) is expected.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    server.answer(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        time.sleep(self.delay)
        if self.mode == "slow":
            self.stopping.wait(15)  # far beyond the 5 s the fetch may take
        body = b"<html>not a jwks</html>" if self.mode == "garbage" else self.body
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        if self.mode not in ("huge", "trickle"):
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
            return
        handler.end_headers()  # no length: streamed until the client stops
        if self.mode == "trickle":  # a byte every 0.5 s, for a minute
            for _ in range(120):
                if self.stopping.wait(0.5):
                    return
                handler.wfile.write(b" ")
                handler.wfile.flush()
            return
        chunk = b" " * 65536
        for _ in range(50 * 16):  # 50 MB
            handler.wfile.write(chunk)

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
