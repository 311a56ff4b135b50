"""Accounts through the gateway: registering, confirming by mail, logging in and out, refreshing,
profiles, resetting a password, and permissions that only an admin may change."""

from __future__ import annotations

import uuid

from .conftest import AssetsApp, eventually


def test_a_person_registers_confirms_by_mail_logs_in_and_edits_their_profile(
    assets_app: AssetsApp,
) -> None:
    app = assets_app
    name = f"reg-{uuid.uuid4().hex[:8]}"
    email = f"{name}@example.com"
    registered = app.http.post(
        "/users/register",
        json={"username": name, "email": email, "password": "correct horse battery"},
    )
    assert registered.status_code == 201, registered.text
    assert registered.json()["status"] == "pending"

    # Not confirmed yet: the auth service knows the account and refuses it, saying why.
    refused = eventually(
        lambda: (
            (
                r := app.http.post(
                    "/auth/login", json={"username": name, "password": "correct horse battery"}
                )
            ).status_code
            == 403
            and r
        ),
        what="auth learns of the pending account",
    )
    assert "confirm" in refused.json()["error"]

    mail = app.mail(email, "confirm")
    assert mail["token"] in mail["body"]
    confirmed = app.http.post("/users/confirm", json={"token": mail["token"]})
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["status"] == "active"
    again = app.http.post("/users/confirm", json={"token": mail["token"]})
    assert again.status_code == 400 and "already used" in again.json()["error"]

    tokens = app.login(name, "correct horse battery")
    me = app.http.get("/users/me", headers=tokens.headers)
    assert me.status_code == 200 and me.json()["username"] == name
    assert "passwordHash" not in me.json()
    edited = app.http.put(
        "/users/me/profile", headers=tokens.headers, json={"displayName": "Ada L.", "site": "lyon"}
    )
    assert edited.status_code == 200
    assert edited.json()["profile"] == {"displayName": "Ada L.", "site": "lyon"}

    # The same name or address again is a conflict, named.
    taken = app.http.post(
        "/users/register",
        json={"username": name, "email": "other@example.com", "password": "correct horse battery"},
    )
    assert taken.status_code == 409 and taken.json()["field"] == "username"


def test_refresh_rotates_and_logout_ends_the_session(assets_app: AssetsApp) -> None:
    app = assets_app
    _, _, tokens = app.new_user()
    renewed = app.http.post("/auth/refresh", json={"refreshToken": tokens.refresh})
    assert renewed.status_code == 200, renewed.text
    fresh = renewed.json()
    assert fresh["refreshToken"] != tokens.refresh
    assert (
        app.http.get(
            "/users/me", headers={"authorization": f"Bearer {fresh['accessToken']}"}
        ).status_code
        == 200
    )

    # The old refresh token was used: replaying it ends the whole session (theft detection).
    replayed = app.http.post("/auth/refresh", json={"refreshToken": tokens.refresh})
    assert replayed.status_code == 401
    assert (
        app.http.post("/auth/refresh", json={"refreshToken": fresh["refreshToken"]}).status_code
        == 401
    )

    _, _, other = app.new_user()
    assert app.http.post("/auth/logout", json={"refreshToken": other.refresh}).status_code == 204
    assert app.http.post("/auth/refresh", json={"refreshToken": other.refresh}).status_code == 401


def test_a_password_reset_takes_a_single_use_token_from_the_mail(assets_app: AssetsApp) -> None:
    app = assets_app
    name, old_password, _ = app.new_user()
    email = f"{name}@example.com"
    asked = app.http.post("/users/password-reset", json={"email": email})
    assert asked.status_code == 202
    # Unknown addresses get the same answer, so nobody learns who is registered.
    unknown = app.http.post("/users/password-reset", json={"email": "nobody@example.com"})
    assert unknown.status_code == 202 and unknown.json() == asked.json()

    token = app.mail(email, "reset")["token"]
    weak = app.http.post("/users/password-reset/confirm", json={"token": token, "password": "x"})
    assert weak.status_code == 400 and weak.json()["field"] == "password"
    done = app.http.post(
        "/users/password-reset/confirm", json={"token": token, "password": "a-brand-new-password"}
    )
    assert done.status_code == 200, done.text
    reused = app.http.post(
        "/users/password-reset/confirm", json={"token": token, "password": "yet-another-password"}
    )
    assert reused.status_code == 400 and "already used" in reused.json()["error"]

    app.login(name, "a-brand-new-password")
    assert (
        app.http.post("/auth/login", json={"username": name, "password": old_password}).status_code
        == 401
    )


def test_only_an_admin_changes_permissions_and_the_new_ones_are_in_the_next_token(
    assets_app: AssetsApp,
) -> None:
    app = assets_app
    name, password, tokens = app.new_user(permissions=[])
    denied = app.http.put(
        f"/users/{tokens.user_id}/permissions",
        headers=tokens.headers,
        json={"roles": ["admin"], "permissions": []},
    )
    assert denied.status_code == 403
    assert app.http.get("/users", headers=tokens.headers).status_code == 403

    granted = app.http.put(
        f"/users/{tokens.user_id}/permissions",
        headers=app.admin().headers,
        json={"roles": ["user", "operator"], "permissions": ["assets:write"]},
    )
    assert granted.status_code == 200, granted.text

    def promoted() -> bool:
        me = app.http.post("/auth/login", json={"username": name, "password": password})
        return me.status_code == 200 and "operator" in me.json()["roles"]

    eventually(promoted, what="the new roles reach the auth service")
