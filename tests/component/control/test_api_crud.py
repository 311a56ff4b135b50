"""Create, read, list, replace, patch and delete through the HTTP API of a running control plane."""

from __future__ import annotations

import httpx

from .manifests import MERGE, ROUTES, SERVICES, route, service


async def test_create_then_get_returns_the_object_with_server_fields(
    client: httpx.AsyncClient,
) -> None:
    created = await client.post(SERVICES, json=service("web", app="web"))
    assert created.status_code == 201, created.text
    body = created.json()
    metadata = body["metadata"]
    assert metadata["namespace"] == "default"
    assert metadata["resourceVersion"].isdigit()
    assert metadata["generation"] == 1
    assert metadata["uid"] and metadata["creationTimestamp"].endswith("Z")
    fetched = await client.get(f"{SERVICES}/web")
    assert fetched.status_code == 200
    assert fetched.json() == body


async def test_create_accepts_yaml_bodies(client: httpx.AsyncClient) -> None:
    text = (
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: api\nspec:\n  ports:\n  - port: 8080\n"
    )
    created = await client.post(
        SERVICES, content=text, headers={"Content-Type": "application/yaml"}
    )
    assert created.status_code == 201, created.text
    assert created.json()["spec"]["ports"] == [{"port": 8080}]


async def test_create_of_an_existing_name_is_409_already_exists(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.post(SERVICES, json=service("web"))).status_code == 201
    again = await client.post(SERVICES, json=service("web"))
    assert again.status_code == 409
    assert again.json()["reason"] == "AlreadyExists"
    assert again.json()["message"] == 'services "web" already exists'


async def test_get_of_a_missing_object_is_404_not_found(client: httpx.AsyncClient) -> None:
    missing = await client.get(f"{SERVICES}/nope")
    assert missing.status_code == 404
    assert missing.json()["kind"] == "Status"
    assert missing.json()["details"] == {"name": "nope", "group": "", "kind": "services"}


async def test_list_filters_by_label_selector(client: httpx.AsyncClient) -> None:
    for name, labels in [
        ("web", {"app": "web", "tier": "front"}),
        ("api", {"app": "api", "tier": "back"}),
        ("db", {"app": "db", "tier": "back"}),
        ("legacy", {"tier": "front"}),
    ]:
        body = service(name)
        body["metadata"]["labels"] = labels
        assert (await client.post(SERVICES, json=body)).status_code == 201

    async def names(selector: str) -> list[str]:
        listed = await client.get(SERVICES, params={"labelSelector": selector})
        assert listed.status_code == 200, listed.text
        assert listed.json()["kind"] == "ServiceList"
        return [item["metadata"]["name"] for item in listed.json()["items"]]

    assert await names("") == ["api", "db", "legacy", "web"]
    assert await names("tier=back") == ["api", "db"]
    assert await names("tier=front,app=web") == ["web"]
    assert await names("tier=front,!app") == ["legacy"]
    assert await names("app in (api,web)") == ["api", "web"]
    assert await names("tier!=back") == ["legacy", "web"]


async def test_list_carries_the_revision_it_was_read_at(client: httpx.AsyncClient) -> None:
    created = (await client.post(SERVICES, json=service("web"))).json()
    listed = (await client.get(SERVICES)).json()
    assert listed["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


async def test_list_across_namespaces(client: httpx.AsyncClient) -> None:
    for namespace in ("default", "prod"):
        url = f"/apis/networking.istio.io/v1/namespaces/{namespace}/virtualservices"
        assert (await client.post(url, json=route("reviews"))).status_code == 201
    listed = await client.get("/apis/networking.istio.io/v1/virtualservices")
    assert [i["metadata"]["namespace"] for i in listed.json()["items"]] == ["default", "prod"]


async def test_an_object_reads_at_any_version_with_the_same_schema(
    client: httpx.AsyncClient,
) -> None:
    url = "/apis/networking.istio.io/v1beta1/namespaces/default/virtualservices"
    assert (await client.post(url, json=route("reviews", "v1beta1"))).status_code == 201
    fetched = await client.get(f"{ROUTES}/reviews")
    assert fetched.json()["apiVersion"] == "networking.istio.io/v1"
    as_written = await client.get(f"{url}/reviews")
    assert as_written.json()["apiVersion"] == "networking.istio.io/v1beta1"


async def test_replace_at_the_current_version_then_a_stale_one_is_409(
    client: httpx.AsyncClient,
) -> None:
    created = (await client.post(SERVICES, json=service("web"))).json()
    update = service("web", port=8080)
    update["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"]
    replaced = await client.put(f"{SERVICES}/web", json=update)
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["spec"]["ports"][0]["port"] == 8080
    assert int(replaced.json()["metadata"]["resourceVersion"]) > int(
        created["metadata"]["resourceVersion"]
    )
    stale = await client.put(f"{SERVICES}/web", json=update)
    assert stale.status_code == 409
    assert stale.json()["reason"] == "Conflict"
    assert (await client.get(f"{SERVICES}/web")).json()["spec"]["ports"][0]["port"] == 8080


async def test_replace_keeps_server_fields_and_counts_generations_of_the_spec(
    client: httpx.AsyncClient,
) -> None:
    created = (await client.post(SERVICES, json=service("web"))).json()
    relabelled = (await client.put(f"{SERVICES}/web", json=service("web", tier="x"))).json()
    respecified = (await client.put(f"{SERVICES}/web", json=service("web", port=81))).json()
    for field in ("uid", "creationTimestamp"):
        assert relabelled["metadata"][field] == created["metadata"][field]
        assert respecified["metadata"][field] == created["metadata"][field]
    assert relabelled["metadata"]["generation"] == 1
    assert respecified["metadata"]["generation"] == 2


async def test_replace_of_a_missing_object_is_404(client: httpx.AsyncClient) -> None:
    assert (await client.put(f"{SERVICES}/web", json=service("web"))).status_code == 404


async def test_merge_patch_adds_changes_and_removes_fields(client: httpx.AsyncClient) -> None:
    await client.post(SERVICES, json=service("web", app="web", tier="front"))
    patch = {"metadata": {"labels": {"tier": None, "team": "a"}}, "spec": {"type": "NodePort"}}
    patched = await client.patch(f"{SERVICES}/web", json=patch, headers=MERGE)
    assert patched.status_code == 200, patched.text
    assert patched.json()["metadata"]["labels"] == {"app": "web", "team": "a"}
    assert patched.json()["spec"]["type"] == "NodePort"
    assert patched.json()["spec"]["ports"] == [{"name": "http", "port": 80}]


async def test_merge_patch_with_a_stale_resource_version_is_409(
    client: httpx.AsyncClient,
) -> None:
    created = (await client.post(SERVICES, json=service("web"))).json()
    version = created["metadata"]["resourceVersion"]
    patch = {"metadata": {"resourceVersion": version, "labels": {"a": "1"}}}
    assert (await client.patch(f"{SERVICES}/web", json=patch, headers=MERGE)).status_code == 200
    patch["metadata"]["labels"] = {"a": "2"}
    stale = await client.patch(f"{SERVICES}/web", json=patch, headers=MERGE)
    assert stale.status_code == 409
    assert (await client.get(f"{SERVICES}/web")).json()["metadata"]["labels"] == {"a": "1"}


async def test_patch_needs_the_merge_patch_media_type(client: httpx.AsyncClient) -> None:
    await client.post(SERVICES, json=service("web"))
    wrong = await client.patch(
        f"{SERVICES}/web",
        json=[{"op": "add", "path": "/x", "value": 1}],
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert wrong.status_code == 415
    assert wrong.json()["reason"] == "UnsupportedMediaType"


async def test_delete_returns_the_object_and_then_it_is_gone(client: httpx.AsyncClient) -> None:
    created = (await client.post(SERVICES, json=service("web", app="web"))).json()
    deleted = await client.delete(f"{SERVICES}/web")
    assert deleted.status_code == 200
    assert deleted.json()["metadata"]["labels"] == {"app": "web"}
    assert int(deleted.json()["metadata"]["resourceVersion"]) > int(
        created["metadata"]["resourceVersion"]
    )
    assert (await client.get(f"{SERVICES}/web")).status_code == 404
    assert (await client.delete(f"{SERVICES}/web")).status_code == 404


async def test_delete_with_a_stale_precondition_is_409(client: httpx.AsyncClient) -> None:
    created = (await client.post(SERVICES, json=service("web"))).json()
    await client.put(f"{SERVICES}/web", json=service("web", port=81))
    options = {"preconditions": {"resourceVersion": created["metadata"]["resourceVersion"]}}
    stale = await client.request("DELETE", f"{SERVICES}/web", json=options)
    assert stale.status_code == 409
    assert (await client.get(f"{SERVICES}/web")).status_code == 200
