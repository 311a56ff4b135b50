"""users: accounts and what users manage of them (the note's "user management" service).

Self-registration with an e-mail confirmation, password reset by a single-use token with an
expiry, profiles, and permissions (admins only). Every change is written with its events in one
sqlite transaction (the outbox): UserAdded and friends on `users` for everyone, the login state
on `credentials` for the auth service alone, and mails on `mail-out` for the mailer.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from assets import kit
from assets.passwords import check_strength, hash_password
from assets.tokens import digest, new_secret
from assets.unsubscribe import NAME, unsubscribe_saga
from gossamer.events.outbox import Outbox
from gossamer.events.saga_runner import SagaRunner

DB = "users.sqlite"
CONFIRM_TTL_S = 24 * 3600
RESET_TTL_S = int(os.environ.get("RESET_TOKEN_TTL", "900"))
PUBLIC_URL = os.environ.get("PUBLIC_URL", "http://assets.greencompute.local")
ROLES = frozenset({"admin", "user", "operator", "device"})

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS users (
        user_id TEXT PRIMARY KEY, username TEXT NOT NULL UNIQUE, email TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL, status TEXT NOT NULL, roles TEXT NOT NULL,
        permissions TEXT NOT NULL, profile TEXT NOT NULL, created_ms INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS user_tokens (
        hash TEXT PRIMARY KEY, user_id TEXT NOT NULL, purpose TEXT NOT NULL,
        expires_ms INTEGER NOT NULL, used_ms INTEGER)""",
)
PROFILE_FIELDS = {"displayName": str, "site": str, "phone": str, "team": str}


class Users:
    """The users table and the events each change publishes."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def register(
        self,
        username: str,
        email: str,
        password: str,
        *,
        roles: list[str],
        permissions: list[str],
        status: str = "pending",
        profile: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        weak = check_strength(password)
        if weak:
            raise kit.Problem(400, weak, field="password")
        if "@" not in email.strip("@"):
            raise kit.Problem(400, "email: not an e-mail address", field="email")
        user_id = uuid.uuid4().hex[:12]
        password_hash = hash_password(password)
        with kit.transaction(self.conn):
            taken = self.conn.execute(
                "SELECT username = ? AS same_name FROM users WHERE username = ? OR email = ?",
                (username, username, email),
            ).fetchone()
            if taken is not None:
                what = "username" if taken["same_name"] else "email"
                raise kit.Problem(409, f"{what}: already registered", field=what)
            self.conn.execute(
                "INSERT INTO users VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    user_id,
                    username,
                    email,
                    password_hash,
                    status,
                    json.dumps(roles),
                    json.dumps(permissions),
                    json.dumps(profile or {}),
                    _now_ms(),
                ),
            )
            outbox = Outbox(self.conn)
            outbox.add(
                "users",
                {
                    "userId": user_id,
                    "username": username,
                    "email": email,
                    "status": status,
                    "roles": roles,
                },
                key=user_id,
                type="UserAdded",
            )
            self._credentials(outbox, user_id)
            if status == "pending":
                secret = self._token(user_id, "confirm", CONFIRM_TTL_S)
                outbox.add(
                    "mail-out",
                    {
                        "to": email,
                        "subject": "Confirm your account",
                        "body": f"Hello {username}, confirm your account:\n{secret}\n"
                        f"or open {PUBLIC_URL}/assetdashboard/#confirm={secret}",
                        "token": secret,
                        "purpose": "confirm",
                        "userId": user_id,
                    },
                    key=user_id,
                    type="MailRequested",
                )
        return {"userId": user_id, "username": username, "status": status}

    def confirm(self, secret: str) -> dict[str, Any]:
        with kit.transaction(self.conn):
            user_id = self._use_token(secret, "confirm")
            self.conn.execute(
                "UPDATE users SET status = 'active' WHERE user_id = ? AND status = 'pending'",
                (user_id,),
            )
            outbox = Outbox(self.conn)
            outbox.add("users", {"userId": user_id}, key=user_id, type="UserConfirmed")
            self._credentials(outbox, user_id)
        return self.get(user_id)

    def request_reset(self, email: str) -> None:
        with kit.transaction(self.conn):
            row = self.conn.execute(
                "SELECT user_id, username FROM users WHERE email = ? AND status = 'active'",
                (email,),
            ).fetchone()
            if row is None:
                return  # the answer is the same, so nobody learns who is registered
            secret = self._token(row["user_id"], "reset", RESET_TTL_S)
            Outbox(self.conn).add(
                "mail-out",
                {
                    "to": email,
                    "subject": "Reset your password",
                    "body": f"Hello {row['username']}, reset your password with this token "
                    f"(valid {RESET_TTL_S // 60} minutes, once): {secret}",
                    "token": secret,
                    "purpose": "reset",
                    "userId": row["user_id"],
                },
                key=row["user_id"],
                type="MailRequested",
            )

    def reset(self, secret: str, password: str) -> dict[str, Any]:
        weak = check_strength(password)
        if weak:
            raise kit.Problem(400, weak, field="password")
        password_hash = hash_password(password)
        with kit.transaction(self.conn):
            user_id = self._use_token(secret, "reset")
            self.conn.execute(
                "UPDATE users SET password_hash = ? WHERE user_id = ?", (password_hash, user_id)
            )
            outbox = Outbox(self.conn)
            outbox.add("users", {"userId": user_id}, key=user_id, type="PasswordChanged")
            self._credentials(outbox, user_id)
        return self.get(user_id)

    def update_profile(self, user_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        for name, value in changes.items():
            if name not in PROFILE_FIELDS:
                raise kit.Problem(
                    400,
                    f"{name}: not a profile field (known: {', '.join(PROFILE_FIELDS)})",
                    field=name,
                )
            if not isinstance(value, PROFILE_FIELDS[name]) or len(value) > 200:
                raise kit.Problem(
                    400, f"{name}: must be a string of at most 200 characters", field=name
                )
        with kit.transaction(self.conn):
            profile = {**self._row(user_id)["profile"], **changes}
            self.conn.execute(
                "UPDATE users SET profile = ? WHERE user_id = ?", (json.dumps(profile), user_id)
            )
            Outbox(self.conn).add(
                "users", {"userId": user_id, "profile": profile}, key=user_id, type="ProfileUpdated"
            )
        return self.get(user_id)

    def set_permissions(
        self, user_id: str, roles: list[str], permissions: list[str]
    ) -> dict[str, Any]:
        unknown = sorted(set(roles) - ROLES)
        if unknown:
            raise kit.Problem(
                400,
                f"roles: unknown role {unknown[0]} (known: {', '.join(sorted(ROLES))})",
                field="roles",
            )
        with kit.transaction(self.conn):
            self._row(user_id)
            self.conn.execute(
                "UPDATE users SET roles = ?, permissions = ? WHERE user_id = ?",
                (json.dumps(roles), json.dumps(permissions), user_id),
            )
            outbox = Outbox(self.conn)
            outbox.add(
                "users",
                {"userId": user_id, "roles": roles, "permissions": permissions},
                key=user_id,
                type="PermissionsChanged",
            )
            self._credentials(outbox, user_id)
        return self.get(user_id)

    def set_status(self, user_id: str, status: str, event: str) -> dict[str, Any]:
        """Move a user to `status` (a saga's steps use this), publishing `event` once."""
        with kit.transaction(self.conn):
            row = self._row(user_id)
            if row["status"] != status:
                self.conn.execute(
                    "UPDATE users SET status = ? WHERE user_id = ?", (status, user_id)
                )
                outbox = Outbox(self.conn)
                outbox.add("users", {"userId": user_id, "status": status}, key=user_id, type=event)
                self._credentials(outbox, user_id)
        return self.get(user_id)

    def delete(self, user_id: str) -> None:
        """Remove the profile for good (the last step of unsubscribing)."""
        with kit.transaction(self.conn):
            row = self.conn.execute("SELECT * FROM users WHERE user_id = ?", (user_id,)).fetchone()
            if row is None:
                return
            self.conn.execute("DELETE FROM users WHERE user_id = ?", (user_id,))
            self.conn.execute("DELETE FROM user_tokens WHERE user_id = ?", (user_id,))
            outbox = Outbox(self.conn)
            outbox.add(
                "users",
                {"userId": user_id, "username": row["username"]},
                key=user_id,
                type="UserDeleted",
            )
            outbox.add(
                "credentials",
                {"userId": user_id, "status": "deleted"},
                key=user_id,
                type="CredentialsChanged",
            )

    def get(self, user_id: str) -> dict[str, Any]:
        row = self._row(user_id)
        return {
            key: row[key]
            for key in (
                "userId",
                "username",
                "email",
                "status",
                "roles",
                "permissions",
                "profile",
                "createdAt",
            )
        }

    def list(self) -> list[dict[str, Any]]:
        ids = [
            r["user_id"] for r in self.conn.execute("SELECT user_id FROM users ORDER BY created_ms")
        ]
        return [self.get(user_id) for user_id in ids]

    def _row(self, user_id: str) -> dict[str, Any]:
        row = self.conn.execute("SELECT * FROM users WHERE user_id = ?", (user_id,)).fetchone()
        if row is None:
            raise kit.Problem(404, f"no user {user_id}")
        return {
            "userId": row["user_id"],
            "username": row["username"],
            "email": row["email"],
            "status": row["status"],
            "roles": json.loads(row["roles"]),
            "permissions": json.loads(row["permissions"]),
            "profile": json.loads(row["profile"]),
            "createdAt": row["created_ms"],
            "passwordHash": row["password_hash"],
        }

    def _credentials(self, outbox: Outbox, user_id: str) -> None:
        row = self._row(user_id)
        outbox.add(
            "credentials",
            {
                "userId": user_id,
                "username": row["username"],
                "passwordHash": row["passwordHash"],
                "roles": row["roles"],
                "permissions": row["permissions"],
                "status": row["status"],
            },
            key=user_id,
            type="CredentialsChanged",
        )

    def _token(self, user_id: str, purpose: str, ttl_s: int) -> str:
        secret = new_secret()
        self.conn.execute(
            "INSERT INTO user_tokens VALUES (?, ?, ?, ?, NULL)",
            (digest(secret), user_id, purpose, _now_ms() + ttl_s * 1000),
        )
        return secret

    def _use_token(self, secret: str, purpose: str) -> str:
        row = self.conn.execute(
            "SELECT * FROM user_tokens WHERE hash = ? AND purpose = ?", (digest(secret), purpose)
        ).fetchone()
        if row is None:
            raise kit.Problem(400, "token: unknown", field="token")
        if row["used_ms"] is not None:
            raise kit.Problem(400, "token: already used", field="token")
        if row["expires_ms"] < _now_ms():
            raise kit.Problem(400, "token: expired", field="token")
        self.conn.execute(
            "UPDATE user_tokens SET used_ms = ? WHERE hash = ?", (_now_ms(), row["hash"])
        )
        return str(row["user_id"])

    def ensure_admin(self, password: str) -> None:
        exists = self.conn.execute("SELECT 1 FROM users WHERE username = 'admin'").fetchone()
        if exists is None:
            self.register(
                "admin",
                "admin@greencompute.local",
                password,
                roles=["admin", "user"],
                permissions=["users:manage", "assets:write"],
                status="active",
            )


def _now_ms() -> int:
    return int(time.time() * 1000)


def _string_list(data: dict[str, Any], name: str) -> list[str]:
    value = kit.field(data, name, list, required=False, default=[])
    if not all(isinstance(item, str) for item in value):
        raise kit.Problem(400, f"{name}: must be a list of strings", field=name)
    return list(value)


def _saga_routes(users: Users, runner: SagaRunner) -> list[Route]:
    """Unsubscribing (a saga across users, auth and asset-mgr-ms) and where a saga is."""

    async def unsubscribe(request: Request) -> Response:
        caller = kit.claims(request)
        user_id = request.path_params["user_id"]
        if caller["sub"] != user_id and "admin" not in caller.get("roles", []):
            raise kit.Problem(403, "only admins unsubscribe other users")
        data = await kit.body(request) if await request.body() else {}
        assets = kit.field(data, "assets", required=False, default="retire")
        to = kit.field(data, "to", required=assets == "reassign", default="")
        if assets not in ("retire", "reassign"):
            raise kit.Problem(400, "assets: retire or reassign", field="assets")
        user = users.get(user_id)
        if user["status"] == "leaving":
            raise kit.Problem(409, f"user {user_id} is already being unsubscribed")
        if assets == "reassign" and (to == user_id or users.get(to)["status"] != "active"):
            raise kit.Problem(400, "to: must be another active user", field="to")
        await runner.ready.wait()
        saga_id = await runner.start(NAME, {"userId": user_id, "assets": assets, "to": to})
        return JSONResponse(
            {"sagaId": saga_id, "status": "running"},
            status_code=202,
            headers={"location": f"/users/sagas/{saga_id}"},
        )

    async def saga(request: Request) -> Response:
        kit.claims(request)
        state = runner.status(request.path_params["saga_id"])
        if state is None:
            raise kit.Problem(404, "no such saga (yet)")
        return JSONResponse(
            {
                "sagaId": state.saga_id,
                "saga": state.saga,
                "data": dict(state.data),
                "status": state.status.value,
                "done": list(state.done),
                "compensated": list(state.compensated),
                "failedStep": state.failed_step,
                "error": state.error,
            }
        )

    return [
        Route("/users/{user_id}", unsubscribe, methods=["DELETE"]),
        Route("/users/sagas/{saga_id}", saga, methods=["GET"]),
    ]


def build() -> Any:
    conn = kit.open_db(DB, SCHEMA)
    users = Users(conn)
    users.ensure_admin(os.environ.get("ADMIN_PASSWORD", "admin-demo-password"))
    events = kit.events_client()
    runner = SagaRunner(events, [unsubscribe_saga(users)])

    async def register(request: Request) -> Response:
        data = await kit.body(request)
        created = users.register(
            kit.field(data, "username"),
            kit.field(data, "email"),
            kit.field(data, "password"),
            roles=["user"],
            permissions=["assets:write"],
        )
        return JSONResponse(created, status_code=201)

    async def confirm(request: Request) -> Response:
        data = await kit.body(request)
        return JSONResponse(users.confirm(kit.field(data, "token")))

    async def request_reset(request: Request) -> Response:
        data = await kit.body(request)
        users.request_reset(kit.field(data, "email"))
        return JSONResponse(
            {"status": "if the address is registered, a mail is on its way"}, status_code=202
        )

    async def reset(request: Request) -> Response:
        data = await kit.body(request)
        return JSONResponse(users.reset(kit.field(data, "token"), kit.field(data, "password")))

    async def me(request: Request) -> Response:
        return JSONResponse(users.get(kit.claims(request)["sub"]))

    async def profile(request: Request) -> Response:
        data = await kit.body(request)
        return JSONResponse(users.update_profile(kit.claims(request)["sub"], data))

    async def listing(request: Request) -> Response:
        kit.require_role(request, "admin")
        return JSONResponse({"users": users.list()})

    async def add(request: Request) -> Response:
        kit.require_role(request, "admin")
        data = await kit.body(request)
        roles = _string_list(data, "roles") or ["user"]
        unknown = sorted(set(roles) - ROLES)
        if unknown:
            raise kit.Problem(400, f"roles: unknown role {unknown[0]}", field="roles")
        created = users.register(
            kit.field(data, "username"),
            kit.field(data, "email"),
            kit.field(data, "password"),
            roles=roles,
            permissions=_string_list(data, "permissions"),
            status="active",
        )
        return JSONResponse(created, status_code=201)

    async def one(request: Request) -> Response:
        caller = kit.claims(request)
        user_id = request.path_params["user_id"]
        if caller["sub"] != user_id and "admin" not in caller.get("roles", []):
            raise kit.Problem(403, "only admins see other users")
        return JSONResponse(users.get(user_id))

    async def permissions(request: Request) -> Response:
        kit.require_role(request, "admin")
        data = await kit.body(request)
        return JSONResponse(
            users.set_permissions(
                request.path_params["user_id"],
                _string_list(data, "roles"),
                _string_list(data, "permissions"),
            )
        )

    return kit.application(
        [
            Route("/users/register", register, methods=["POST"]),
            Route("/users/confirm", confirm, methods=["POST"]),
            Route("/users/password-reset", request_reset, methods=["POST"]),
            Route("/users/password-reset/confirm", reset, methods=["POST"]),
            Route("/users/me", me, methods=["GET"]),
            Route("/users/me/profile", profile, methods=["PUT"]),
            Route("/users", listing, methods=["GET"]),
            Route("/users", add, methods=["POST"]),
            Route("/users/{user_id}", one, methods=["GET"]),
            Route("/users/{user_id}/permissions", permissions, methods=["PUT"]),
            *_saga_routes(users, runner),
        ],
        background=[kit.relay(DB), runner.run],
        on_stop=[conn.close, runner.aclose, events.aclose],
    )


if __name__ == "__main__":
    kit.serve(build())
