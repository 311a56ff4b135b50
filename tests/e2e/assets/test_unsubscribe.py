"""Unsubscribing a user is a saga across users, auth and asset-mgr-ms: it completes, or it
fails and leaves the user as they were; a runner killed mid-way finishes after its restart.

Failures are made the way an operator would see them: a VirtualService fault on the asset
manager's routes (abort, delay), applied to the running mesh with `gossamer apply`."""

from __future__ import annotations

import copy
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import yaml

from .conftest import AssetsApp, Tokens, eventually, gossamer


def _saga(app: AssetsApp, saga_id: str, admin: Tokens, *statuses: str) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        answer = app.http.get(f"/users/sagas/{saga_id}", headers=admin.headers)
        if answer.status_code != 200:
            return None
        body = answer.json()
        return body if body["status"] in statuses else None

    return eventually(finished, 60, f"saga {saga_id} reaches {statuses}")


def _asset(app: AssetsApp, asset_id: str, admin: Tokens) -> dict[str, Any]:
    answer = app.http.get(f"/assetmgrms/assets/{asset_id}", headers=admin.headers)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _with_faults(app: AssetsApp, faults: dict[str, dict[str, Any]]) -> None:
    """The asset manager's VirtualService with a fault per path regex, in front of its routes."""
    documents = list(yaml.safe_load_all((app.folder / "traffic.yaml").read_text()))
    [service] = [d for d in documents if d["kind"] == "VirtualService"]
    changed = copy.deepcopy(service)
    canary = changed["spec"]["http"][0]
    changed["spec"]["http"] = [
        {"match": [{"uri": {"regex": regex}}], "fault": fault, "route": canary["route"]}
        for regex, fault in faults.items()
    ] + changed["spec"]["http"]
    _apply(app, changed)


def _without_faults(app: AssetsApp) -> None:
    documents = list(yaml.safe_load_all((app.folder / "traffic.yaml").read_text()))
    [service] = [d for d in documents if d["kind"] == "VirtualService"]
    _apply(app, service)


def _apply(app: AssetsApp, document: dict[str, Any]) -> None:
    path = app.folder / "fault.yaml.tmp"
    path.write_text(yaml.safe_dump(document))
    applied = gossamer("apply", "-f", str(path), cwd=app.folder)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    time.sleep(1.0)  # sidecars take a new snapshot within a fraction of a second


def _pid(state: Path, name: str) -> int:
    rows = json.loads((state / "status.json").read_text())["processes"]
    [row] = [r for r in rows if r["name"] == name]
    return int(row["pid"])


def test_an_unsubscribed_user_is_gone_from_every_service(assets_app: AssetsApp) -> None:
    app = assets_app
    name, password, user = app.new_user()
    assets = [app.add_asset(user, f"leaving-{n}-{name}") for n in range(2)]
    admin = app.admin()

    started = app.http.request(
        "DELETE", f"/users/{user.user_id}", headers=admin.headers, json={"assets": "retire"}
    )
    assert started.status_code == 202, started.text
    saga = _saga(app, started.json()["sagaId"], admin, "completed", "aborted", "stuck")
    assert saga["status"] == "completed", saga
    assert saga["done"] == ["mark-leaving", "revoke-tokens", "release-assets", "delete-profile"]

    assert app.http.get(f"/users/{user.user_id}", headers=admin.headers).status_code == 404
    for asset in assets:
        assert _asset(app, asset["assetId"], admin)["status"] == "retired"
    eventually(
        lambda: (
            app.http.post("/auth/login", json={"username": name, "password": password}).status_code
            == 401
        ),
        what="auth forgets the account",
    )

    def view_agrees() -> bool:
        listed = app.http.get("/assetdashboard/api/assets", headers=admin.headers).json()
        mine = [a for a in listed["assets"] if a["owner"] == user.user_id]
        return len(mine) == 2 and all(a["status"] == "retired" for a in mine)

    eventually(view_agrees, what="the dashboard's view shows the assets retired")
    [[deleted]] = app.query(
        f"SELECT count(*) FROM users WHERE type = 'UserDeleted' AND key = '{user.user_id}'"
    )
    assert deleted == 1


def test_when_releasing_the_assets_fails_the_user_is_restored(assets_app: AssetsApp) -> None:
    app = assets_app
    name, password, user = app.new_user()
    asset = app.add_asset(user, f"kept-{name}")
    admin = app.admin()
    _with_faults(
        app,
        {
            "/assetmgrms/owners/[^/]+/release": {
                "abort": {"httpStatus": 503, "percentage": {"value": 100}}
            }
        },
    )
    try:
        started = app.http.request(
            "DELETE", f"/users/{user.user_id}", headers=admin.headers, json={"assets": "retire"}
        )
        assert started.status_code == 202, started.text
        saga = _saga(app, started.json()["sagaId"], admin, "aborted", "completed", "stuck")
    finally:
        _without_faults(app)
    assert saga["status"] == "aborted", saga
    assert saga["failedStep"] == "release-assets"
    # Retries ran out, so the release may have happened: it is undone too, then the rest.
    assert saga["compensated"] == ["release-assets", "revoke-tokens", "mark-leaving"]

    assert app.http.get(f"/users/{user.user_id}", headers=admin.headers).json()["status"] == (
        "active"
    )
    kept = _asset(app, asset["assetId"], admin)
    assert kept["status"] == "active" and kept["owner"] == user.user_id
    tokens = app.login(name, password)
    assert app.http.get("/users/me", headers=tokens.headers).status_code == 200


def test_a_saga_runner_killed_while_compensating_finishes_and_undoes_each_step_once(
    assets_app: AssetsApp,
) -> None:
    app = assets_app
    name, password, user = app.new_user()
    asset = app.add_asset(user, f"killed-{name}")
    admin = app.admin()
    _with_faults(
        app,
        {
            "/assetmgrms/owners/[^/]+/release": {
                "abort": {"httpStatus": 503, "percentage": {"value": 100}}
            },
            "/assetmgrms/owners/[^/]+/restore": {
                "delay": {"fixedDelay": "3s", "percentage": {"value": 100}}
            },
        },
    )
    try:
        started = app.http.request(
            "DELETE", f"/users/{user.user_id}", headers=admin.headers, json={"assets": "retire"}
        )
        assert started.status_code == 202, started.text
        saga_id = started.json()["sagaId"]
        _saga(app, saga_id, admin, "compensating")
        time.sleep(1.0)  # inside the 3 s the asset manager's restore is held
        os.kill(_pid(app.state, "greencompute.users-0"), signal.SIGKILL)
        saga = _saga(app, saga_id, admin, "aborted", "completed", "stuck")
    finally:
        _without_faults(app)
    assert saga["status"] == "aborted", saga
    assert saga["compensated"] == ["release-assets", "revoke-tokens", "mark-leaving"]
    restored = app.query(
        f"SELECT count(*) FROM users WHERE type = 'UserRestored' AND key = '{user.user_id}'"
    )
    assert restored == [[1]]
    kept = _asset(app, asset["assetId"], admin)
    assert kept["status"] == "active" and kept["owner"] == user.user_id
    app.login(name, password)
