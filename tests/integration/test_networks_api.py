"""/v1/networks and sandbox memberships in-process on the fake driver: seed 000's contract,
field by field, and its errors. Real traffic between real sandboxes is in
tests/e2e/test_networks_runc.py."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.integration.test_sandboxes_api import _key, app_settings, client, create

__all__ = ["app_settings", "client"]  # fixtures


def test_create_list_get_delete_as_the_seed_shows(client: TestClient) -> None:
    made = client.post("/v1/networks", json={"name": "backend"})
    assert made.status_code == 200
    body = made.json()
    assert body["status"] == "success"
    network = body["data"]
    assert set(network) == {"id", "name", "created_at", "member_count"}
    assert network["id"].startswith("net-") and network["id"] == network["id"].lower()
    assert (network["name"], network["member_count"]) == ("backend", 0)
    assert network["created_at"].endswith("Z")

    listed = client.get("/v1/networks").json()["data"]
    assert listed["data"] == [network]
    assert listed["pagination"] == {"total": 1, "limit": 50, "offset": 0, "count": 1}

    for ident in ("backend", network["id"]):
        got = client.get(f"/v1/networks/{ident}").json()["data"]
        assert got == {**network, "members": []}

    deleted = client.delete("/v1/networks/backend").json()
    assert deleted == {"status": "success", "data": {"ok": True}}
    assert client.get("/v1/networks/backend").status_code == 404
    assert client.delete("/v1/networks/backend").status_code == 404


def test_names_are_validated_and_scoped_per_user(client: TestClient) -> None:
    assert client.post("/v1/networks", json={"name": "backend"}).status_code == 200
    duplicate = client.post("/v1/networks", json={"name": "backend"})
    assert duplicate.status_code == 400 and duplicate.json()["status"] == "fail"
    assert "already" in duplicate.json()["data"]["name"]
    for bad in ({"name": "Back End"}, {"name": ""}, {"name": "-x"}, {}, {"name": 7},
                {"name": "ok", "extra": 1}):  # fmt: skip
        answer = client.post("/v1/networks", json=bad)
        assert answer.status_code == 400 and answer.json()["status"] == "fail", bad
    other = _key(client, "bob")
    theirs = client.post("/v1/networks", json={"name": "backend"}, headers={"X-Api-Key": other})
    assert theirs.status_code == 200, "the same name for another user is fine"
    mine = client.get("/v1/networks").json()["data"]["data"]
    assert [n["id"] for n in mine] != [theirs.json()["data"]["id"]]
    assert client.get(f"/v1/networks/{theirs.json()['data']['id']}").status_code == 404


def test_pagination(client: TestClient) -> None:
    for index in range(5):
        client.post("/v1/networks", json={"name": f"net{index}"})
    page = client.get("/v1/networks", params={"limit": 2, "offset": 2}).json()["data"]
    assert [n["name"] for n in page["data"]] == ["net2", "net3"]
    assert page["pagination"] == {"total": 5, "limit": 2, "offset": 2, "count": 2}
    assert client.get("/v1/networks", params={"limit": 501}).status_code == 400
    huge = client.get("/v1/networks", params={"offset": 10**30})  # found by schemathesis
    assert huge.status_code == 400 and "offset" in huge.json()["data"]


def test_members_attach_detach_and_the_errors(client: TestClient) -> None:
    client.post("/v1/networks", json={"name": "backend"})
    first = create(client, name="brave-otter", networks=[{"id": "backend"}])
    second = create(client, name="clever-fox")
    attached = client.post(f"/v1/sandboxes/{second['id']}/networks", json={"id": "backend"})
    assert attached.status_code == 200 and attached.json()["data"] == {"ok": True}
    again = client.post(f"/v1/sandboxes/{second['id']}/networks", json={"id": "backend"})
    assert again.status_code == 200, "attaching a member again changes nothing"

    detail = client.get("/v1/networks/backend").json()["data"]
    assert detail["member_count"] == 2
    members = detail["members"]
    assert [(m["sandbox_id"], m["name"], m["status"]) for m in members] == [
        (first["id"], "brave-otter", "running"),
        (second["id"], "clever-fox", "running"),
    ]
    assert len({m["ip"] for m in members}) == 2
    assert all(m["ip"].startswith("10.42.") for m in members)
    assert client.get("/v1/networks").json()["data"]["data"][0]["member_count"] == 2

    busy = client.delete("/v1/networks/backend")
    assert busy.status_code == 409 and "detach" in busy.json()["data"]["network"]

    missing = [
        client.post("/v1/sandboxes/sb_nope/networks", json={"id": "backend"}),
        client.post(f"/v1/sandboxes/{first['id']}/networks", json={"id": "nope"}),
        client.delete(f"/v1/sandboxes/{first['id']}/networks/nope"),
        client.delete("/v1/sandboxes/sb_nope/networks/backend"),
    ]
    assert [r.status_code for r in missing] == [404, 404, 404, 404]
    assert client.post(f"/v1/sandboxes/{first['id']}/networks", json={}).status_code == 400

    assert client.delete(f"/v1/sandboxes/{second['id']}/networks/backend").status_code == 200
    not_member = client.delete(f"/v1/sandboxes/{second['id']}/networks/backend")
    assert not_member.status_code == 404
    client.delete(f"/v1/sandboxes/{first['id']}")
    assert client.get("/v1/networks/backend").json()["data"]["members"] == [], (
        "a deleted sandbox leaves the member list"
    )
    gone = client.post(f"/v1/sandboxes/{first['id']}/networks", json={"id": "backend"})
    assert gone.status_code == 409
    assert client.delete("/v1/networks/backend").status_code == 200


def test_create_with_an_unknown_network_is_400_and_leaves_nothing(client: TestClient) -> None:
    refused = client.post(
        "/v1/sandboxes", json={"shape": "s-1vcpu-256mb", "networks": [{"id": "nope"}]}
    )
    assert refused.status_code == 400 and "nope" in refused.json()["data"]["networks"]
    assert client.get("/v1/sandboxes").json()["data"]["data"] == []


def test_without_a_key_everything_is_401(client: TestClient) -> None:
    client.headers.pop("X-Api-Key")
    for method, path in [("GET", "/v1/networks"), ("POST", "/v1/networks"),
                         ("GET", "/v1/networks/x"), ("DELETE", "/v1/networks/x"),
                         ("POST", "/v1/sandboxes/x/networks"),
                         ("DELETE", "/v1/sandboxes/x/networks/y")]:  # fmt: skip
        answer = client.request(method, path, json={"name": "x", "id": "x"})
        assert answer.status_code == 401 and answer.json()["status"] == "fail", path
