"""risk: a failure risk score per asset from its sensor readings (the note's risk assessment).

Consumes the `readings` topic as group `risk`, each ReadingRecorded once (the event id is
recorded in the transaction that applies it). Per asset and sensor it keeps the exponentially
weighted mean and variance of `assets.risk_model` (alpha 0.1, and a slow mean, alpha 0.02, for
the trend), scores the asset with the trained logistic model, and bands the score (low below
0.3, medium, high from 0.7; a band is left downwards only 0.05 below its threshold). When the
band changes, or the asset is assessed for the first time, a RiskAssessed event goes into the
outbox in the same sqlite transaction as the state update, and the relay publishes it to the
`risk` topic keyed by asset id.

    GET /risk/{assetId}     {"assetId", "score", "band", "sensors": {sensor: {"mean",
                            "variance", "last", "readings"}}, "updatedAt"}; 404 if never seen
    GET /risk?band=high     {"assets": [...]} highest score first (`limit`, 100, at most 1000)
"""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from assets import kit
from assets.risk_model import BANDS, SENSORS, RiskModel, SensorState, band_for, observe
from gossamer.events.outbox import Outbox
from gossamer.events.wire import ReceivedEvent

log = logging.getLogger("assets.risk")

DB = "risk.sqlite"
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS sensor_state (
        asset_id TEXT NOT NULL, sensor TEXT NOT NULL, mean REAL NOT NULL,
        variance REAL NOT NULL, slow_mean REAL NOT NULL, last REAL NOT NULL,
        readings INTEGER NOT NULL, PRIMARY KEY (asset_id, sensor)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS asset_risk (
        asset_id TEXT PRIMARY KEY, score REAL NOT NULL, band TEXT NOT NULL,
        updated_ms INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS asset_risk_by_band ON asset_risk (band, score DESC)",
)
MAX_LIST = 1000


class RiskBook:
    """The risk state of every asset seen: what a reading changes, and what is asked of it.

    Its methods take the connection to use: the consumer's, inside the transaction that records
    the event, or the API's for reads (both on one sqlite file in WAL mode).
    """

    def __init__(self, model: RiskModel) -> None:
        self.model = model

    def apply(self, conn: sqlite3.Connection, event: ReceivedEvent) -> None:
        """Fold one ReadingRecorded into its asset's state; publish RiskAssessed on a new band."""
        reading = _reading(event.payload)
        if reading is None:
            log.warning("event %s: not a reading, skipped: %.200r", event.id, event.payload)
            return
        asset_id, sensor, value = reading
        states = self._states(conn, asset_id)
        observe(states, sensor, value)
        state = states[sensor]
        conn.execute(
            "INSERT OR REPLACE INTO sensor_state VALUES (?, ?, ?, ?, ?, ?, ?)",
            (asset_id, sensor, *_columns(state)),
        )
        score = self.model.score(states)
        row = conn.execute("SELECT band FROM asset_risk WHERE asset_id = ?", (asset_id,)).fetchone()
        previous = row[0] if row is not None else None
        band = band_for(score, previous)
        now_ms = int(time.time() * 1000)
        conn.execute(
            "INSERT OR REPLACE INTO asset_risk VALUES (?, ?, ?, ?)",
            (asset_id, score, band, now_ms),
        )
        if band != previous:
            Outbox(conn).add(
                "risk",
                {
                    "assetId": asset_id,
                    "score": round(score, 4),
                    "band": band,
                    "previousBand": previous,
                    "sensors": {name: _sensor_json(s) for name, s in sorted(states.items())},
                    "assessedAt": _iso(now_ms),
                },
                key=asset_id,
                type="RiskAssessed",
            )

    def assessment(self, conn: sqlite3.Connection, asset_id: str) -> dict[str, Any] | None:
        """One asset's score, band and sensors; None if no reading of it was ever seen."""
        found = self._assessments(conn, "WHERE asset_id = ?", (asset_id,))
        return found[0] if found else None

    def assessments(
        self, conn: sqlite3.Connection, band: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """Assets (of one band, or all), highest score first."""
        if band is None:
            return self._assessments(conn, "ORDER BY score DESC, asset_id LIMIT ?", (limit,))
        return self._assessments(
            conn, "WHERE band = ? ORDER BY score DESC, asset_id LIMIT ?", (band, limit)
        )

    def _assessments(
        self, conn: sqlite3.Connection, where: str, parameters: tuple[Any, ...]
    ) -> list[dict[str, Any]]:
        rows = conn.execute(
            "SELECT r.asset_id, r.score, r.band, r.updated_ms, s.sensor, s.mean, s.variance, "
            "s.slow_mean, s.last, s.readings "
            f"FROM (SELECT * FROM asset_risk {where}) AS r "
            "LEFT JOIN sensor_state AS s ON s.asset_id = r.asset_id "
            "ORDER BY r.score DESC, r.asset_id, s.sensor",
            parameters,
        ).fetchall()
        found: dict[str, dict[str, Any]] = {}
        for asset_id, score, band, updated_ms, sensor, *state in rows:
            entry = found.setdefault(
                asset_id,
                {
                    "assetId": asset_id,
                    "score": round(score, 4),
                    "band": band,
                    "sensors": {},
                    "updatedAt": _iso(updated_ms),
                },
            )
            if sensor is not None:
                entry["sensors"][sensor] = _sensor_json(SensorState(*state))
        return list(found.values())

    @staticmethod
    def _states(conn: sqlite3.Connection, asset_id: str) -> dict[str, SensorState]:
        rows = conn.execute(
            "SELECT sensor, mean, variance, slow_mean, last, readings FROM sensor_state "
            "WHERE asset_id = ?",
            (asset_id,),
        )
        return {sensor: SensorState(*state) for sensor, *state in rows}


def _reading(payload: Any) -> tuple[str, str, float] | None:
    """(assetId, sensor, value) of a ReadingRecorded payload, or None if it is not one."""
    if not isinstance(payload, dict):
        return None
    asset_id, sensor, value = payload.get("assetId"), payload.get("sensor"), payload.get("value")
    if not isinstance(asset_id, str) or not asset_id or sensor not in SENSORS:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return asset_id, sensor, float(value)


def _columns(state: SensorState) -> tuple[float, float, float, float, int]:
    return state.mean, state.variance, state.slow_mean, state.last, state.readings


def _sensor_json(state: SensorState) -> dict[str, Any]:
    return {
        "mean": round(state.mean, 6),
        "variance": round(state.variance, 6),
        "last": state.last,
        "readings": state.readings,
    }


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def build() -> Any:
    conn = kit.open_db(DB, SCHEMA)
    book = RiskBook(RiskModel.load())

    async def one(request: Request) -> Response:
        asset_id = request.path_params["asset_id"]
        found = book.assessment(conn, asset_id)
        if found is None:
            raise kit.Problem(404, f"no readings of asset {asset_id} yet")
        return JSONResponse(found)

    async def listing(request: Request) -> Response:
        band = request.query_params.get("band")
        if band is not None and band not in BANDS:
            raise kit.Problem(400, f"band: one of {', '.join(BANDS)}", field="band")
        raw_limit = request.query_params.get("limit", "100")
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIST:
            raise kit.Problem(400, f"limit: a number from 1 to {MAX_LIST}", field="limit")
        return JSONResponse({"assets": book.assessments(conn, band, int(raw_limit))})

    return kit.application(
        [
            Route("/risk", listing, methods=["GET"]),
            Route("/risk/{asset_id}", one, methods=["GET"]),
        ],
        background=[kit.consumer("readings", "risk", DB, book.apply), kit.relay(DB)],
        on_stop=[conn.close],
    )


if __name__ == "__main__":
    kit.serve(build())
