"""asset-mgr-ms: the asset records (pumps, turbines...) with their owner and site.

Every change is written with its event in one sqlite transaction (outbox): AssetAdded,
AssetUpdated, AssetRetired on the `assets` topic, keyed by asset id. The owner-release endpoints
are steps of the unsubscribe saga: each takes an `Idempotency-Key`, and a key seen before gets
the first answer again instead of a second effect.
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
from gossamer.events.outbox import Outbox

DB = "assets.sqlite"
VERSION = os.environ.get("ASSETS_VERSION", "v1")
TYPES = ("pump", "turbine", "compressor", "motor", "transformer")
EDITABLE = {"name": str, "type": str, "site": str, "owner": str, "serial": str}
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS assets (
        asset_id TEXT PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL, site TEXT NOT NULL,
        owner TEXT NOT NULL, serial TEXT, status TEXT NOT NULL, created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS assets_by_owner ON assets (owner)",
    """CREATE TABLE IF NOT EXISTS releases (
        idempotency_key TEXT PRIMARY KEY, user_id TEXT NOT NULL, action TEXT NOT NULL,
        assets TEXT NOT NULL, answer TEXT NOT NULL, at_ms INTEGER NOT NULL)""",
)


class Assets:
    """The assets table and the events of its changes."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def add(self, fields: dict[str, Any]) -> dict[str, Any]:
        asset_id = f"{fields['type'][:3]}-{uuid.uuid4().hex[:8]}"
        now = _now_ms()
        with kit.transaction(self.conn):
            self.conn.execute(
                "INSERT INTO assets VALUES (?, ?, ?, ?, ?, ?, 'active', ?, ?)",
                (
                    asset_id,
                    fields["name"],
                    fields["type"],
                    fields["site"],
                    fields["owner"],
                    fields.get("serial"),
                    now,
                    now,
                ),
            )
            asset = self._get(asset_id)
            Outbox(self.conn).add("assets", asset, key=asset_id, type="AssetAdded")
        return asset

    def update(self, asset_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        with kit.transaction(self.conn):
            asset = self._get(asset_id)
            if asset["status"] == "retired":
                raise kit.Problem(409, f"asset {asset_id} is retired")
            columns = ", ".join(f"{name} = ?" for name in changes)
            self.conn.execute(
                f"UPDATE assets SET {columns}, updated_ms = ? WHERE asset_id = ?",
                (*changes.values(), _now_ms(), asset_id),
            )
            asset = self._get(asset_id)
            Outbox(self.conn).add("assets", asset, key=asset_id, type="AssetUpdated")
        return asset

    def retire(self, asset_id: str) -> dict[str, Any]:
        with kit.transaction(self.conn):
            asset = self._get(asset_id)
            if asset["status"] != "retired":
                self._set(asset_id, status="retired")
                asset = self._get(asset_id)
                Outbox(self.conn).add("assets", asset, key=asset_id, type="AssetRetired")
        return asset

    def release(self, key: str, user_id: str, action: str, to: str | None) -> dict[str, Any]:
        """Retire or hand over every active asset of `user_id`, once per idempotency key."""
        with kit.transaction(self.conn):
            seen = self._seen(key)
            if seen is not None:
                return seen
            ids = [
                row["asset_id"]
                for row in self.conn.execute(
                    "SELECT asset_id FROM assets WHERE owner = ? AND status = 'active'", (user_id,)
                )
            ]
            outbox = Outbox(self.conn)
            for asset_id in ids:
                if action == "retire":
                    self._set(asset_id, status="retired")
                    outbox.add("assets", self._get(asset_id), key=asset_id, type="AssetRetired")
                else:
                    assert to is not None
                    self._set(asset_id, owner=to)
                    outbox.add("assets", self._get(asset_id), key=asset_id, type="AssetUpdated")
            answer = {"userId": user_id, "action": action, "to": to, "assets": ids}
            self._remember(key, user_id, action, ids, answer)
        return answer

    def restore(self, key: str, user_id: str) -> dict[str, Any]:
        """Undo the releases of `user_id`'s assets (the saga's compensation), once per key."""
        with kit.transaction(self.conn):
            seen = self._seen(key)
            if seen is not None:
                return seen
            restored: list[str] = []
            outbox = Outbox(self.conn)
            for release in self.conn.execute(
                "SELECT * FROM releases WHERE user_id = ? AND action IN ('retire', 'reassign') "
                "ORDER BY at_ms DESC",
                (user_id,),
            ).fetchall():
                for asset_id in json.loads(release["assets"]):
                    self._set(asset_id, owner=user_id, status="active")
                    outbox.add("assets", self._get(asset_id), key=asset_id, type="AssetUpdated")
                    restored.append(asset_id)
                self.conn.execute(
                    "UPDATE releases SET action = 'restore' || '-' || action "
                    "WHERE idempotency_key = ?",
                    (release["idempotency_key"],),
                )
            answer = {"userId": user_id, "restored": restored}
            self._remember(key, user_id, "restore", restored, answer)
        return answer

    def search(self, filters: dict[str, str], text: str | None, limit: int) -> list[dict[str, Any]]:
        where, values = [], []
        for name, value in filters.items():
            where.append(f"{name} = ?")
            values.append(value)
        if text:
            where.append("(name LIKE ? OR asset_id LIKE ? OR serial LIKE ?)")
            values += [f"%{text}%"] * 3
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self.conn.execute(
            f"SELECT * FROM assets {clause} ORDER BY created_ms LIMIT ?",
            (*values, limit),
        ).fetchall()
        return [_asset(row) for row in rows]

    def get(self, asset_id: str) -> dict[str, Any]:
        return self._get(asset_id)

    def _get(self, asset_id: str) -> dict[str, Any]:
        row = self.conn.execute("SELECT * FROM assets WHERE asset_id = ?", (asset_id,)).fetchone()
        if row is None:
            raise kit.Problem(404, f"no asset {asset_id}")
        return _asset(row)

    def _set(self, asset_id: str, **columns: str) -> None:
        assignments = ", ".join(f"{name} = ?" for name in columns)
        self.conn.execute(
            f"UPDATE assets SET {assignments}, updated_ms = ? WHERE asset_id = ?",
            (*columns.values(), _now_ms(), asset_id),
        )

    def _seen(self, key: str) -> dict[str, Any] | None:
        row = self.conn.execute(
            "SELECT answer FROM releases WHERE idempotency_key = ?", (key,)
        ).fetchone()
        return None if row is None else dict(json.loads(row["answer"]))

    def _remember(
        self, key: str, user_id: str, action: str, ids: list[str], answer: dict[str, Any]
    ) -> None:
        self.conn.execute(
            "INSERT INTO releases VALUES (?, ?, ?, ?, ?, ?)",
            (key, user_id, action, json.dumps(ids), json.dumps(answer), _now_ms()),
        )


def _asset(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "assetId": row["asset_id"],
        "name": row["name"],
        "type": row["type"],
        "site": row["site"],
        "owner": row["owner"],
        "serial": row["serial"],
        "status": row["status"],
        "createdAt": row["created_ms"],
        "updatedAt": row["updated_ms"],
    }


def _now_ms() -> int:
    return int(time.time() * 1000)


def _checked(data: dict[str, Any], *, partial: bool) -> dict[str, Any]:
    """The editable fields of `data`, each a non-empty string; 400 naming the first bad one."""
    unknown = sorted(set(data) - set(EDITABLE))
    if unknown:
        raise kit.Problem(
            400,
            f"{unknown[0]}: not a field of an asset (fields: {', '.join(EDITABLE)})",
            field=unknown[0],
        )
    fields = {}
    for name in EDITABLE:
        required = not partial and name in ("name", "type", "site")
        value = kit.field(data, name, str, required=required)
        if value is not None:
            if len(value) > 200 or not value.strip():
                raise kit.Problem(400, f"{name}: 1 to 200 characters", field=name)
            fields[name] = value.strip()
    if "type" in fields and fields["type"] not in TYPES:
        raise kit.Problem(400, f"type: one of {', '.join(TYPES)}", field="type")
    return fields


def _may_write(request: Request, owner: str | None = None) -> dict[str, Any] | None:
    """A person's claims when they may change assets (of `owner`); None for a mesh peer.

    A request without a token can only come from a peer the AuthorizationPolicy lets in."""
    if kit.JWT_PAYLOAD_HEADER not in request.headers:
        return None
    caller = kit.claims(request)
    if "admin" in caller.get("roles", []):
        return caller
    if "assets:write" not in caller.get("permission", []):
        raise kit.Problem(403, "this needs the assets:write permission")
    if owner is not None and owner != caller["sub"]:
        raise kit.Problem(403, "only the owner or an admin changes this asset")
    return caller


def build() -> Any:
    conn = kit.open_db(DB, SCHEMA)
    assets = Assets(conn)
    headers = {"x-asset-version": VERSION}

    async def listing(request: Request) -> Response:
        query = request.query_params
        filters = {
            name: query[name] for name in ("site", "type", "owner", "status") if name in query
        }
        try:
            limit = min(int(query.get("limit", "500")), 5000)
        except ValueError:
            raise kit.Problem(400, "limit: must be an integer", field="limit") from None
        found = assets.search(filters, query.get("q"), limit)
        return JSONResponse({"assets": found, "count": len(found)}, headers=headers)

    async def create(request: Request) -> Response:
        fields = _checked(await kit.body(request), partial=False)
        caller = _may_write(request)
        if "owner" not in fields:
            if caller is None:
                raise kit.Problem(400, "owner: required", field="owner")
            fields["owner"] = caller["sub"]
        return JSONResponse(assets.add(fields), status_code=201, headers=headers)

    async def one(request: Request) -> Response:
        return JSONResponse(assets.get(request.path_params["asset_id"]), headers=headers)

    async def change(request: Request) -> Response:
        asset_id = request.path_params["asset_id"]
        fields = _checked(await kit.body(request), partial=True)
        _may_write(request, assets.get(asset_id)["owner"])
        return JSONResponse(assets.update(asset_id, fields), headers=headers)

    async def retire(request: Request) -> Response:
        asset_id = request.path_params["asset_id"]
        _may_write(request, assets.get(asset_id)["owner"])
        return JSONResponse(assets.retire(asset_id), headers=headers)

    async def release(request: Request) -> Response:
        key = _idempotency_key(request)
        data = await kit.body(request)
        action = kit.field(data, "action")
        if action not in ("retire", "reassign"):
            raise kit.Problem(400, "action: retire or reassign", field="action")
        to = kit.field(data, "to", required=action == "reassign")
        return JSONResponse(assets.release(key, request.path_params["user_id"], action, to))

    async def restore(request: Request) -> Response:
        key = _idempotency_key(request)
        return JSONResponse(assets.restore(key, request.path_params["user_id"]))

    return kit.application(
        [
            Route("/assetmgrms/assets", listing, methods=["GET"]),
            Route("/assetmgrms/assets", create, methods=["POST"]),
            Route("/assetmgrms/assets/{asset_id}", one, methods=["GET"]),
            Route("/assetmgrms/assets/{asset_id}", change, methods=["PUT"]),
            Route("/assetmgrms/assets/{asset_id}", retire, methods=["DELETE"]),
            Route("/assetmgrms/owners/{user_id}/release", release, methods=["POST"]),
            Route("/assetmgrms/owners/{user_id}/restore", restore, methods=["POST"]),
        ],
        background=[kit.relay(DB)],
        on_stop=[conn.close],
    )


def _idempotency_key(request: Request) -> str:
    key = request.headers.get("idempotency-key", "")
    if not key or len(key) > 200:
        raise kit.Problem(
            400, "Idempotency-Key: required (at most 200 characters)", field="Idempotency-Key"
        )
    return key


if __name__ == "__main__":
    kit.serve(build())
