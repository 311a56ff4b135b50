"""auth: logs users in and issues their tokens (the note's "authentication runtime service").

Credentials come from the users service as CredentialsChanged events on the `credentials`
topic (compacted: the newest state per user), kept in auth's own sqlite file, so logging in never
calls another service. Access tokens are ES256 JWTs the sidecars check against the key set this
service publishes (`/.well-known/jwks.json`); refresh tokens are opaque, stored as hashes, and
rotated on use (a reused one revokes its whole family, as OAuth 2.0 for browsers advises).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from assets import kit
from assets.passwords import verify_password
from assets.tokens import digest, new_secret
from gossamer.events.wire import ReceivedEvent

ISSUER = os.environ.get("AUTH_ISSUER", "http://auth-svc.greencompute.svc.cluster.local")
AUDIENCE = "asset-dashboard"
ACCESS_TTL_S = int(os.environ.get("ACCESS_TOKEN_TTL", "300"))
REFRESH_TTL_S = 8 * 3600
DB = "auth.sqlite"

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS credentials (
        user_id TEXT PRIMARY KEY, username TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL,
        roles TEXT NOT NULL, permissions TEXT NOT NULL, status TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS suspended (
        user_id TEXT PRIMARY KEY, since_ms INTEGER NOT NULL, reason TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS refresh_tokens (
        hash TEXT PRIMARY KEY, user_id TEXT NOT NULL, family TEXT NOT NULL,
        expires_ms INTEGER NOT NULL, used INTEGER NOT NULL DEFAULT 0)""",
    "CREATE INDEX IF NOT EXISTS refresh_by_user ON refresh_tokens (user_id)",
)


class SigningKey:
    """The service's ES256 key: made once in its data folder and shared by its replicas."""

    def __init__(self, folder: Path) -> None:
        path = folder / "signing-key.pem"
        if not path.exists():
            fresh = ec.generate_private_key(ec.SECP256R1())
            pem = fresh.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            temporary = folder / f".signing-key.{os.getpid()}"
            temporary.write_bytes(pem)
            temporary.chmod(0o600)
            try:
                os.link(temporary, path)  # the first replica wins; the others read its key
            except FileExistsError:
                pass
            finally:
                temporary.unlink()
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        self.private = loaded
        public = json.loads(ECAlgorithm.to_jwk(loaded.public_key()))
        self.kid = digest(json.dumps(public, sort_keys=True))[:16]
        self.jwks = {"keys": [{**public, "kid": self.kid, "use": "sig", "alg": "ES256"}]}

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.private, algorithm="ES256", headers={"kid": self.kid})


class Auth:
    """Logins, token pairs and revocations over auth's own tables."""

    def __init__(self, conn: sqlite3.Connection, key: SigningKey) -> None:
        self.conn = conn
        self.key = key

    def login(self, username: str, password: str) -> dict[str, Any]:
        row = self.conn.execute(
            "SELECT * FROM credentials WHERE username = ?", (username,)
        ).fetchone()
        # Verify against a dummy hash when the user is unknown: the answer takes as long.
        stored = row["password_hash"] if row is not None else _DUMMY_HASH
        if not verify_password(password, stored) or row is None:
            raise kit.Problem(401, "wrong user name or password")
        self._check_may_log_in(row)
        return self._issue(row, family=uuid.uuid4().hex)

    def refresh(self, secret: str) -> dict[str, Any]:
        now = _now_ms()
        with kit.transaction(self.conn):
            token = self.conn.execute(
                "SELECT * FROM refresh_tokens WHERE hash = ?", (digest(secret),)
            ).fetchone()
            if token is None or token["expires_ms"] < now:
                raise kit.Problem(401, "the refresh token is unknown or expired")
            reused = bool(token["used"])
            if reused:
                # Someone replays a token already exchanged: end the whole session (committed
                # before the refusal, so that the thief's newer token dies too).
                self.conn.execute("DELETE FROM refresh_tokens WHERE family = ?", (token["family"],))
            else:
                self.conn.execute(
                    "UPDATE refresh_tokens SET used = 1 WHERE hash = ?", (token["hash"],)
                )
        if reused:
            raise kit.Problem(401, "the refresh token was already used; log in again")
        row = self.conn.execute(
            "SELECT * FROM credentials WHERE user_id = ?", (token["user_id"],)
        ).fetchone()
        if row is None:
            raise kit.Problem(401, "the account no longer exists")
        self._check_may_log_in(row)
        return self._issue(row, family=token["family"])

    def logout(self, secret: str) -> None:
        with kit.transaction(self.conn):
            token = self.conn.execute(
                "SELECT family FROM refresh_tokens WHERE hash = ?", (digest(secret),)
            ).fetchone()
            if token is not None:
                self.conn.execute("DELETE FROM refresh_tokens WHERE family = ?", (token["family"],))

    def suspend(self, user_id: str, reason: str) -> int:
        """No more logins or refreshes for the user; returns how many sessions ended."""
        with kit.transaction(self.conn):
            self.conn.execute(
                "INSERT INTO suspended VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                (user_id, _now_ms(), reason),
            )
            return self.conn.execute(
                "DELETE FROM refresh_tokens WHERE user_id = ?", (user_id,)
            ).rowcount

    def resume(self, user_id: str) -> None:
        with kit.transaction(self.conn):
            self.conn.execute("DELETE FROM suspended WHERE user_id = ?", (user_id,))

    def _check_may_log_in(self, row: sqlite3.Row) -> None:
        if row["status"] == "pending":
            raise kit.Problem(403, "confirm your e-mail address first")
        if row["status"] != "active":
            raise kit.Problem(403, f"the account is {row['status']}")
        suspended = self.conn.execute(
            "SELECT reason FROM suspended WHERE user_id = ?", (row["user_id"],)
        ).fetchone()
        if suspended is not None:
            raise kit.Problem(403, f"the account is suspended: {suspended['reason']}")

    def _issue(self, row: sqlite3.Row, family: str) -> dict[str, Any]:
        now = int(time.time())
        access = self.key.sign(
            {
                "iss": ISSUER,
                "aud": [AUDIENCE],
                "sub": row["user_id"],
                "preferred_username": row["username"],
                "roles": json.loads(row["roles"]),
                "permission": json.loads(row["permissions"]),
                "iat": now,
                "exp": now + ACCESS_TTL_S,
                "jti": uuid.uuid4().hex,
            }
        )
        secret = new_secret()
        with kit.transaction(self.conn):
            self.conn.execute(
                "INSERT INTO refresh_tokens (hash, user_id, family, expires_ms) "
                "VALUES (?, ?, ?, ?)",
                (digest(secret), row["user_id"], family, _now_ms() + REFRESH_TTL_S * 1000),
            )
        return {
            "accessToken": access,
            "refreshToken": secret,
            "tokenType": "Bearer",
            "expiresIn": ACCESS_TTL_S,
            "userId": row["user_id"],
            "roles": json.loads(row["roles"]),
        }


_DUMMY_HASH = (
    "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
)


def apply_credentials(conn: sqlite3.Connection, event: ReceivedEvent) -> None:
    """CredentialsChanged from the users service: the newest state of one user's login."""
    data = event.payload
    if not isinstance(data, dict) or "userId" not in data:
        return
    if data.get("status") == "deleted":
        conn.execute("DELETE FROM credentials WHERE user_id = ?", (data["userId"],))
        conn.execute("DELETE FROM refresh_tokens WHERE user_id = ?", (data["userId"],))
        return
    conn.execute(
        """INSERT INTO credentials VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET
           username = excluded.username, password_hash = excluded.password_hash,
           roles = excluded.roles, permissions = excluded.permissions, status = excluded.status""",
        (
            data["userId"],
            data["username"],
            data["passwordHash"],
            json.dumps(data.get("roles", [])),
            json.dumps(data.get("permissions", [])),
            data.get("status", "active"),
        ),
    )


def _now_ms() -> int:
    return int(time.time() * 1000)


def build() -> Any:
    conn = kit.open_db(DB, SCHEMA)
    service = Auth(conn, SigningKey(kit.data_dir()))

    async def login(request: Request) -> Response:
        data = await kit.body(request)
        username = kit.field(data, "username")
        password = kit.field(data, "password")
        return JSONResponse(service.login(username, password))

    async def refresh(request: Request) -> Response:
        data = await kit.body(request)
        return JSONResponse(service.refresh(kit.field(data, "refreshToken")))

    async def logout(request: Request) -> Response:
        data = await kit.body(request)
        service.logout(kit.field(data, "refreshToken"))
        return Response(status_code=204)

    async def jwks(request: Request) -> Response:
        return JSONResponse(service.key.jwks, headers={"cache-control": "max-age=300"})

    async def suspend(request: Request) -> Response:
        user_id = request.path_params["user_id"]
        ended = service.suspend(user_id, "being unsubscribed")
        return JSONResponse({"userId": user_id, "suspended": True, "sessionsEnded": ended})

    async def resume(request: Request) -> Response:
        user_id = request.path_params["user_id"]
        service.resume(user_id)
        return JSONResponse({"userId": user_id, "suspended": False})

    async def whoami(request: Request) -> Response:
        return JSONResponse(kit.claims(request))

    return kit.application(
        [
            Route("/auth/login", login, methods=["POST"]),
            Route("/auth/refresh", refresh, methods=["POST"]),
            Route("/auth/logout", logout, methods=["POST"]),
            Route("/auth/me", whoami, methods=["GET"]),
            Route("/.well-known/jwks.json", jwks, methods=["GET"]),
            Route("/auth/.well-known/jwks.json", jwks, methods=["GET"]),
            Route("/auth/users/{user_id}/revoke", suspend, methods=["POST"]),
            Route("/auth/users/{user_id}/restore", resume, methods=["POST"]),
        ],
        background=[kit.consumer("credentials", "auth", DB, apply_credentials)],
        on_stop=[conn.close],
    )


if __name__ == "__main__":
    kit.serve(build())
