"""asset-dashboard-bff: the dashboard's backend for front end, and the page itself.

Lists come from the bff's own view, kept from the `assets`, `risk` and `users` topics (eventual
consistency: no synchronous fan-out to three services per page load); the page follows changes
live through a server-sent event stream. The view also aggregates for analytics (assets per site
and band, band changes per day). Only the detail of one asset asks the risk service directly.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from assets import kit
from gossamer.events.wire import ReceivedEvent

DB = "bff.sqlite"
PAGE = Path(__file__).resolve().parent.parent / "dashboard"
ASSETS_URL = "http://asset-mgr-ms-svc:8080/assetmgrms"
RISK_URL = "http://risk-svc:8080/risk"
STREAM_POLL_S = 0.25
KEEPALIVE_S = 10.0
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS assets (
        asset_id TEXT PRIMARY KEY, name TEXT, type TEXT, site TEXT, owner TEXT, status TEXT,
        band TEXT, score REAL, assessed_ms INTEGER, updated_ms INTEGER)""",
    """CREATE TABLE IF NOT EXISTS users (
        user_id TEXT PRIMARY KEY, username TEXT, status TEXT)""",
    """CREATE TABLE IF NOT EXISTS band_changes (
        day TEXT, site TEXT, band TEXT, changes INTEGER, PRIMARY KEY (day, site, band))""",
    """CREATE TABLE IF NOT EXISTS changes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, asset_id TEXT NOT NULL, at_ms INTEGER)""",
)


def apply_asset(conn: sqlite3.Connection, event: ReceivedEvent) -> None:
    """AssetAdded / AssetUpdated / AssetRetired: the newest record, band kept."""
    asset = event.payload
    if not isinstance(asset, dict) or "assetId" not in asset:
        return
    conn.execute(
        """INSERT INTO assets (asset_id, name, type, site, owner, status, updated_ms)
           VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (asset_id) DO UPDATE SET
           name = excluded.name, type = excluded.type, site = excluded.site,
           owner = excluded.owner, status = excluded.status, updated_ms = excluded.updated_ms""",
        (
            asset["assetId"],
            asset.get("name"),
            asset.get("type"),
            asset.get("site"),
            asset.get("owner"),
            asset.get("status"),
            asset.get("updatedAt"),
        ),
    )
    _changed(conn, asset["assetId"])


def apply_risk(conn: sqlite3.Connection, event: ReceivedEvent) -> None:
    """RiskAssessed: the asset's band, and a count for the day's analytics."""
    risk = event.payload
    if not isinstance(risk, dict) or "assetId" not in risk:
        return
    conn.execute(
        """INSERT INTO assets (asset_id, band, score, assessed_ms) VALUES (?, ?, ?, ?)
           ON CONFLICT (asset_id) DO UPDATE SET band = excluded.band, score = excluded.score,
           assessed_ms = excluded.assessed_ms""",
        (risk["assetId"], risk.get("band"), risk.get("score"), event.time_ms),
    )
    # The consumer's connection has no row factory: rows are tuples here.
    (site,) = conn.execute(
        "SELECT site FROM assets WHERE asset_id = ?", (risk["assetId"],)
    ).fetchone()
    day = time.strftime("%Y-%m-%d", time.gmtime(event.time_ms / 1000))
    conn.execute(
        """INSERT INTO band_changes VALUES (?, ?, ?, 1) ON CONFLICT (day, site, band)
           DO UPDATE SET changes = changes + 1""",
        (day, site or "unknown", risk.get("band")),
    )
    _changed(conn, risk["assetId"])


def apply_user(conn: sqlite3.Connection, event: ReceivedEvent) -> None:
    """User events: names to show owners by, and who has left."""
    user = event.payload
    if not isinstance(user, dict) or "userId" not in user:
        return
    if event.type == "UserDeleted":
        conn.execute("DELETE FROM users WHERE user_id = ?", (user["userId"],))
        return
    conn.execute(
        """INSERT INTO users VALUES (?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET
           username = coalesce(excluded.username, username),
           status = coalesce(excluded.status, status)""",
        (user["userId"], user.get("username"), user.get("status")),
    )


def _changed(conn: sqlite3.Connection, asset_id: str) -> None:
    now = int(time.time() * 1000)
    conn.execute("INSERT INTO changes (asset_id, at_ms) VALUES (?, ?)", (asset_id, now))
    conn.execute("DELETE FROM changes WHERE at_ms < ?", (now - 600_000,))


class View:
    """Reads of the bff's view."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def assets(self, filters: dict[str, str]) -> list[dict[str, Any]]:
        where = " AND ".join(f"a.{name} = ?" for name in filters)
        rows = self.conn.execute(
            "SELECT a.*, u.username AS owner_name FROM assets a "
            "LEFT JOIN users u ON u.user_id = a.owner "
            f"WHERE a.name IS NOT NULL {'AND ' + where if where else ''} "
            "ORDER BY a.site, a.name",
            tuple(filters.values()),
        ).fetchall()
        return [_row(row) for row in rows]

    def asset(self, asset_id: str) -> dict[str, Any] | None:
        row = self.conn.execute(
            "SELECT a.*, u.username AS owner_name FROM assets a "
            "LEFT JOIN users u ON u.user_id = a.owner WHERE a.asset_id = ?",
            (asset_id,),
        ).fetchone()
        return None if row is None or row["name"] is None else _row(row)

    def summary(self) -> dict[str, Any]:
        by_site: dict[str, dict[str, int]] = {}
        for row in self.conn.execute(
            "SELECT site, coalesce(band, 'unassessed') AS band, count(*) AS n FROM assets "
            "WHERE status = 'active' GROUP BY site, band"
        ):
            by_site.setdefault(row["site"], {})[row["band"]] = row["n"]
        changes = [
            dict(row)
            for row in self.conn.execute(
                "SELECT day, site, band, changes FROM band_changes ORDER BY day DESC, site, band "
                "LIMIT 200"
            )
        ]
        users = self.conn.execute("SELECT count(*) FROM users").fetchone()[0]
        return {"assetsBySiteAndBand": by_site, "bandChanges": changes, "users": users}

    def changes_after(self, seq: int) -> tuple[int, list[str]]:
        rows = self.conn.execute(
            "SELECT seq, asset_id FROM changes WHERE seq > ? ORDER BY seq", (seq,)
        ).fetchall()
        if not rows:
            return seq, []
        return rows[-1]["seq"], sorted({row["asset_id"] for row in rows})

    def last_change(self) -> int:
        return int(self.conn.execute("SELECT coalesce(max(seq), 0) FROM changes").fetchone()[0])


def _row(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "assetId": row["asset_id"],
        "name": row["name"],
        "type": row["type"],
        "site": row["site"],
        "owner": row["owner"],
        "ownerName": row["owner_name"],
        "status": row["status"],
        "band": row["band"],
        "score": row["score"],
        "assessedAt": row["assessed_ms"],
        "updatedAt": row["updated_ms"],
    }


def build() -> Any:
    conn = kit.open_db(DB, SCHEMA)
    view = View(conn)
    client = kit.mesh_client()

    async def page(request: Request) -> Response:
        return FileResponse(PAGE / "index.html", headers={"cache-control": "no-cache"})

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ("app.js", "style.css"):
            raise kit.Problem(404, f"no such file: {name}")
        return FileResponse(PAGE / name, headers={"cache-control": "no-cache"})

    async def to_page(request: Request) -> Response:
        return RedirectResponse("/assetdashboard/")

    async def assets(request: Request) -> Response:
        kit.claims(request)
        filters = {
            name: request.query_params[name]
            for name in ("site", "band", "status", "owner")
            if name in request.query_params
        }
        return JSONResponse({"assets": view.assets(filters), "cursor": view.last_change()})

    async def asset(request: Request) -> Response:
        kit.claims(request)
        asset_id = request.path_params["asset_id"]
        found = view.asset(asset_id)
        if found is None:
            raise kit.Problem(404, f"no asset {asset_id}")
        answer = await client.get(f"{RISK_URL}/{asset_id}")
        found["risk"] = answer.json() if answer.status_code == 200 else None
        return JSONResponse(found)

    async def add_asset(request: Request) -> Response:
        caller = kit.claims(request)
        if "assets:write" not in caller.get("permission", []):
            raise kit.Problem(403, "this needs the assets:write permission")
        data = await kit.body(request)
        data.setdefault("owner", caller["sub"])
        if data["owner"] != caller["sub"] and "admin" not in caller.get("roles", []):
            raise kit.Problem(403, "only admins add assets for someone else")
        answer = await client.post(f"{ASSETS_URL}/assets", json=data)
        return Response(
            answer.content, status_code=answer.status_code, media_type="application/json"
        )

    async def summary(request: Request) -> Response:
        kit.claims(request)
        return JSONResponse(view.summary())

    async def stream(request: Request) -> Response:
        kit.claims(request)
        try:
            cursor = int(request.query_params.get("cursor", view.last_change()))
        except ValueError:
            raise kit.Problem(400, "cursor: must be an integer", field="cursor") from None
        return StreamingResponse(
            _changes(request, view, cursor),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache"},
        )

    return kit.application(
        [
            Route("/assetdashboard", to_page),
            Route("/assetdashboard/", page),
            Route("/assetdashboard/{name}", static),
            Route("/assetdashboard/api/assets", assets, methods=["GET"]),
            Route("/assetdashboard/api/assets", add_asset, methods=["POST"]),
            Route("/assetdashboard/api/assets/{asset_id}", asset, methods=["GET"]),
            Route("/assetdashboard/api/summary", summary, methods=["GET"]),
            Route("/assetdashboard/api/stream", stream, methods=["GET"]),
        ],
        background=[
            kit.consumer("assets", "bff", DB, apply_asset),
            kit.consumer("risk", "bff", DB, apply_risk),
            kit.consumer("users", "bff", DB, apply_user),
        ],
        on_stop=[conn.close, client.aclose],
    )


async def _changes(request: Request, view: View, cursor: int) -> AsyncIterator[bytes]:
    """Server-sent events: each changed asset as it is now, and a comment now and then."""
    quiet = 0.0
    while not await request.is_disconnected():
        cursor, changed = view.changes_after(cursor)
        for asset_id in changed:
            asset = view.asset(asset_id)
            if asset is not None:
                yield f"id: {cursor}\nevent: asset\ndata: {json.dumps(asset)}\n\n".encode()
        if changed:
            quiet = 0.0
        elif quiet >= KEEPALIVE_S:
            yield b": keepalive\n\n"
            quiet = 0.0
        await asyncio.sleep(STREAM_POLL_S)
        quiet += STREAM_POLL_S


if __name__ == "__main__":
    kit.serve(build())
