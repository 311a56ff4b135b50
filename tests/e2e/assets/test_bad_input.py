"""Bad input gets a clear 4xx saying what is wrong, and nothing partial is stored."""

from __future__ import annotations

import time
import uuid

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .conftest import AssetsApp


def test_malformed_json_and_missing_fields_are_refused_naming_the_field(
    assets_app: AssetsApp,
) -> None:
    app = assets_app
    broken = app.http.post(
        "/users/register",
        content=b'{"username": "x",',
        headers={"content-type": "application/json"},
    )
    assert broken.status_code == 400 and "not JSON" in broken.json()["error"]
    missing = app.http.post("/users/register", json={"username": "someone"})
    assert missing.status_code == 400 and missing.json()["field"] == "email"
    wrong_type = app.http.post("/auth/login", json={"username": 7, "password": "x"})
    assert wrong_type.status_code == 400 and wrong_type.json()["field"] == "username"

    _, _, owner = app.new_user()
    bad_asset = app.http.post(
        "/assetdashboard/api/assets",
        headers=owner.headers,
        json={"name": "p1", "type": "spaceship", "site": "lyon"},
    )
    assert bad_asset.status_code == 400 and bad_asset.json()["field"] == "type"
    unknown = app.http.get(
        f"/assetdashboard/api/assets/nope-{uuid.uuid4().hex[:6]}", headers=owner.headers
    )
    assert unknown.status_code == 404


def test_forged_expired_and_missing_tokens_are_refused(assets_app: AssetsApp) -> None:
    app = assets_app
    _, _, user = app.new_user()
    claims = {
        "iss": "http://auth-svc.greencompute.svc.cluster.local",
        "aud": ["asset-dashboard"],
        "sub": user.user_id,
        "roles": ["admin"],
        "iat": int(time.time()),
        "exp": int(time.time()) + 300,
    }
    header = jwt.get_unverified_header(user.access)

    # Signed by someone else's key under the real key's id: the signature does not verify.
    stranger = ec.generate_private_key(ec.SECP256R1())
    forged = jwt.encode(claims, stranger, algorithm="ES256", headers={"kid": header["kid"]})
    answer = app.http.get("/users", headers={"authorization": f"Bearer {forged}"})
    assert answer.status_code == 401 and "jwt" in answer.headers["x-gossamer-reason"]

    # Signed by the real key (read from the auth service's data), but expired.
    pem = (app.state / "data" / "greencompute" / "auth" / "signing-key.pem").read_bytes()
    key = serialization.load_pem_private_key(pem, password=None)
    expired = jwt.encode(
        {**claims, "exp": int(time.time()) - 600, "iat": int(time.time()) - 900},
        key,
        algorithm="ES256",
        headers={"kid": header["kid"]},
    )
    answer = app.http.get("/users/me", headers={"authorization": f"Bearer {expired}"})
    assert answer.status_code == 401 and "expired" in answer.headers["x-gossamer-reason"]

    # No token at all: the service says to log in; a client's own claims header is dropped.
    answer = app.http.get("/users/me", headers={"x-jwt-payload": "eyJzdWIiOiJhZG1pbiJ9"})
    assert answer.status_code == 401 and "log in" in answer.json()["error"]


def test_a_reading_batch_with_one_bad_row_is_refused_whole(assets_app: AssetsApp) -> None:
    app = assets_app
    _, _, owner = app.new_user()
    asset = app.add_asset(owner, f"batch-{uuid.uuid4().hex[:6]}")
    device = app.device()
    before = app.query(f"SELECT count(*) FROM readings WHERE key = '{asset['assetId']}'")
    rows = [{"assetId": asset["assetId"], "sensor": "temperature", "value": 61.5}] * 3
    bad = [*rows, {"assetId": asset["assetId"], "sensor": "temperature", "value": "hot"}]
    answer = app.http.post(
        "/assetconsumer/readings", headers=device.headers, json={"readings": bad}
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["row"] == 3 and answer.json()["field"] == "value"

    unknown = [*rows, {"assetId": "no-such-asset", "sensor": "vibration", "value": 2.0}]
    answer = app.http.post(
        "/assetconsumer/readings", headers=device.headers, json={"readings": unknown}
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["row"] == 3

    broken = app.http.post(
        "/assetconsumer/readings",
        headers={**device.headers, "content-type": "application/json"},
        content=b"{not json",
    )
    assert broken.status_code == 400
    # An operator without the device role may not post readings.
    assert (
        app.http.post(
            "/assetconsumer/readings", headers=owner.headers, json={"readings": rows}
        ).status_code
        == 403
    )

    after = app.query(f"SELECT count(*) FROM readings WHERE key = '{asset['assetId']}'")
    assert after == before


def test_partners_read_assets_on_the_api_host_with_a_key_only(assets_app: AssetsApp) -> None:
    """The ApiProduct of api.yaml: api.greencompute.local takes an API key, not a login."""
    app = assets_app
    _, _, owner = app.new_user()
    asset = app.add_asset(owner, f"partner-{uuid.uuid4().hex[:6]}")
    api = {"host": "api.greencompute.local"}
    missing = app.http.get("/assetmgrms/assets", headers=api)
    assert missing.status_code == 401, missing.text
    wrong = app.http.get("/assetmgrms/assets", headers={**api, "x-api-key": "guess"})
    assert wrong.status_code == 401
    listed = app.http.get(
        f"/assetmgrms/assets/{asset['assetId']}", headers={**api, "x-api-key": "acme-demo-key"}
    )
    assert listed.status_code == 200, listed.text
    assert listed.json()["assetId"] == asset["assetId"]
    # Read-only: the plan has no route for writes.
    refused = app.http.post(
        "/assetmgrms/assets",
        headers={**api, "x-api-key": "acme-demo-key"},
        json={"name": "x", "type": "pump", "site": "lyon"},
    )
    assert refused.status_code in (403, 404), refused.text
