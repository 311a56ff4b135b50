"""An issuer for proxy tests: signing keys, the tokens they sign, and a real HTTP JWKS server.

`JwksServer` answers every GET with the key set it currently publishes, counts the fetches,
and can hold its answers back (`hold`/`release`) so a test decides exactly when keys arrive.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class SigningKey:
    """One of an issuer's private keys, named by `kid`."""

    kid: str
    private: PrivateKey
    alg: str

    @classmethod
    def es256(cls, kid: str) -> SigningKey:
        return cls(kid, ec.generate_private_key(ec.SECP256R1()), "ES256")

    @classmethod
    def rs256(cls, kid: str) -> SigningKey:
        return cls(kid, rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256")

    def jwk(self) -> dict[str, Any]:
        """The public half as a JWKS member."""
        if isinstance(self.private, rsa.RSAPrivateKey):
            public = RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        else:
            public = ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {**public, "kid": self.kid, "use": "sig", "alg": self.alg}

    def sign(self, claims: dict[str, Any], *, kid: str | None = None) -> str:
        """A compact JWS of `claims`; `kid` overrides the header's key id."""
        return jwt.encode(
            claims, self.private, algorithm=self.alg, headers={"kid": kid or self.kid}
        )


def claims(
    issuer: str, subject: str = "alice", expires_in: float = 300, **extra: Any
) -> dict[str, Any]:
    """A token payload with `iss`, `sub` and an `exp` relative to now."""
    return {"iss": issuer, "sub": subject, "exp": int(time.time() + expires_in), **extra}


def jwks(*keys: SigningKey) -> str:
    """The JWKS document that publishes `keys`."""
    return json.dumps({"keys": [key.jwk() for key in keys]})


class JwksServer:
    """A one-document HTTP/1.1 server on 127.0.0.1; each GET gets the current key set."""

    def __init__(self, *keys: SigningKey) -> None:
        self.document = jwks(*keys).encode()
        self.fetches = 0
        """GETs received, counted when they arrive (a held one counts already)."""
        self._open = asyncio.Event()
        self._open.set()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/.well-known/jwks.json"

    def publish(self, *keys: SigningKey) -> None:
        """Serve `keys` from the next fetch on (a key rotation)."""
        self.document = jwks(*keys).encode()

    def hold(self) -> None:
        """Keep fetches waiting for an answer until `release`."""
        self._open.clear()

    def release(self) -> None:
        """Answer the fetches held so far, and answer new ones at once."""
        self._open.set()

    async def start(self) -> JwksServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            await reader.readuntil(b"\r\n\r\n")
            self.fetches += 1
            await self._open.wait()
            body = self.document
            head = (
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()
