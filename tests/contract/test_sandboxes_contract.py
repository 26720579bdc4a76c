"""``/v1/sandboxes`` lifecycle as CREATEOS-API.md §2, §3 and §4.1-4.2 say (fake driver: the
shapes of the control plane). Resume from ``error`` on real runc is in
tests/e2e/test_faults_runc.py."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.contract.conftest import REGION, client_of
from tests.support.server import HutchProcess

# §2.1: every field of SandboxView (the omitempty ones may be null here).
VIEW = {
    "id", "status", "ip", "vcpu", "mem_mib", "disk_mib", "created_at", "ingress_enabled",
    "ingress_url_template", "name", "running_at", "destroyed_at", "paused_at",
    "last_resumed_at", "spawn_ms", "shape", "rootfs", "region", "egress", "envs",
    "ssh_pubkeys", "created_by", "bandwidth_ingress_bytes", "forked_from",
    "auto_pause_after_seconds",
}  # fmt: skip
# §2.2: the create response.
CREATED = {
    "id", "status", "name", "ip", "shape", "rootfs", "vcpu", "mem_mib", "disk_mib",
    "spawn_ms", "egress", "bandwidth_quota_bytes", "ingress_url_template",
    "auto_pause_after_seconds",
}  # fmt: skip
STATUSES = {"creating", "running", "pausing", "paused", "resuming", "forking", "error",
            "destroying", "destroyed", "failed"}  # fmt: skip
ED25519 = (
    ed25519.Ed25519PrivateKey.generate()
    .public_key()
    .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    .decode()
)


def create(api: httpx.Client, **body: Any) -> dict[str, Any]:
    answer = api.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb", **body})
    assert 200 <= answer.status_code < 300, answer.text
    assert answer.json()["status"] == "success"
    data: dict[str, Any] = answer.json()["data"]
    return data


def fail(answer: httpx.Response, status: int, field: str) -> str:
    """The JSend fail envelope (§1.3), naming ``field``; returns its message."""
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["status"] == "fail" and field in body["data"], body
    return str(body["data"][field])


def test_create_answers_running_with_the_create_response_fields(api: httpx.Client) -> None:
    data = create(api, envs={"TOKEN": "secret-value"}, ssh_pubkeys=[ED25519])
    assert set(data) >= CREATED
    assert data["status"] == "running", "§20.3: the create response carries status"
    quota = data["bandwidth_quota_bytes"]
    assert isinstance(quota, int) and (quota == -1 or quota > 0), "-1: unmetered"
    assert isinstance(data["spawn_ms"], int | float) and data["ip"]
    assert data["id"].startswith("sb")
    assert "secret-value" not in str(data)


def test_the_view_has_every_field_and_envs_are_names_only(api: httpx.Client) -> None:
    made = create(api, envs={"B": "2", "A": "1"}, ssh_pubkeys=[f"{ED25519} me@host"])
    view = api.get(f"/v1/sandboxes/{made['id']}").json()["data"]
    assert set(view) >= VIEW
    assert view["envs"] == ["A", "B"] and "1" not in view["envs"]
    assert view["ssh_pubkeys"] == [f"{ED25519} me@host"]
    assert view["region"] == REGION and view["bandwidth_ingress_bytes"] == 0
    assert view["forked_from"] is None and view["status"] in STATUSES
    listed = api.get("/v1/sandboxes").json()["data"]
    assert set(listed) == {"data", "pagination"}
    assert set(listed["data"][0]) >= VIEW
    assert api.get(f"/v1/sandboxes/by-ip/{view['ip']}").json()["data"]["id"] == made["id"]


def test_ssh_keys_are_normalised_deduplicated_and_checked(api: httpx.Client) -> None:
    made = create(api, ssh_pubkeys=[f"  {ED25519}  a ", ED25519, f"{ED25519}\tb"])
    assert made and api.get(f"/v1/sandboxes/{made['id']}").json()["data"]["ssh_pubkeys"] == [
        f"{ED25519} a"
    ]
    for bad in (["not a key"], [ED25519[:-10]], [f'command="sh" {ED25519}'], [""]):
        fail(api.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb", "ssh_pubkeys": bad}),
             400, "ssh_pubkeys")  # fmt: skip


def test_placement_fields_are_checked_against_this_deployment(api: httpx.Client) -> None:
    [host] = api.get("/v1/hosts").json()["data"]["data"]
    assert host["labels"] == {"tier": "gold", "zone": "a"}
    made = create(api, host_id=host["id"], region=REGION, node_selector={"tier": "gold"})
    assert made["status"] == "running"
    base = {"shape": "s-1vcpu-256mb"}
    fail(api.post("/v1/sandboxes", json={**base, "host_id": "203.0.113.9"}), 400, "host_id")
    message = fail(api.post("/v1/sandboxes", json={**base, "region": "mars-1"}), 400, "region")
    assert REGION in message
    message = fail(api.post("/v1/sandboxes", json={**base, "node_selector": {"tier": "tin"}}),
                   400, "node_selector")  # fmt: skip
    assert "no host" in message and "tier=tin" in message


def test_bandwidth_quota_is_refused_at_create_unless_zero(api: httpx.Client) -> None:
    base = {"shape": "s-1vcpu-256mb"}
    fail(api.post("/v1/sandboxes", json={**base, "bandwidth_quota_bytes": 1024}), 400,
         "bandwidth_quota_bytes")  # fmt: skip
    default = create(api)["bandwidth_quota_bytes"]
    assert create(api, bandwidth_quota_bytes=0)["bandwidth_quota_bytes"] == default


@pytest.mark.parametrize(
    "envs",
    [
        {f"K{i}": "v" for i in range(65)},  # 64 entries at most
        {"BIG": "x" * 4097},  # 4 KiB per value
        {f"K{i}": "x" * 4000 for i in range(17)},  # 64 KiB together
        {"1BAD": "v"},  # ^[A-Za-z_][A-Za-z0-9_]*$
    ],
)
def test_envs_limits(api: httpx.Client, envs: dict[str, str]) -> None:
    fail(api.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb", "envs": envs}), 400, "envs")


def test_envs_at_the_limits_are_accepted(api: httpx.Client) -> None:
    assert create(api, envs={f"K{i}": "x" * 1000 for i in range(64)})
    assert create(api, envs={"BIG": "é" * 2048})  # 4096 bytes


def test_unknown_fields_are_a_400_naming_the_field(api: httpx.Client) -> None:
    fail(api.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb", "colour": "red"}), 400,
         "colour")  # fmt: skip
    made = create(api)
    fail(api.patch(f"/v1/sandboxes/{made['id']}", json={"shape": "x"}), 400, "shape")


def test_auto_pause_range_and_disable(api: httpx.Client) -> None:
    base = {"shape": "s-1vcpu-256mb"}
    for seconds in (0, 59, 86401, -1):
        fail(api.post("/v1/sandboxes", json={**base, "auto_pause_after_seconds": seconds}), 400,
             "auto_pause_after_seconds")  # fmt: skip
    made = create(api, auto_pause_after_seconds=60)
    assert made["auto_pause_after_seconds"] == 60
    assert create(api, auto_pause_after_seconds=None)["auto_pause_after_seconds"] is None
    url = f"/v1/sandboxes/{made['id']}"
    patched = api.patch(url, json={"auto_pause_after_seconds": 86400})
    assert (
        patched.status_code == 200 and patched.json()["data"]["auto_pause_after_seconds"] == 86400
    )
    assert set(patched.json()["data"]) >= VIEW
    fail(api.patch(url, json={"auto_pause_after_seconds": 30}), 400, "auto_pause_after_seconds")
    off = api.patch(url, json={"disable_auto_pause": True}).json()["data"]
    assert off["auto_pause_after_seconds"] is None
    kept = api.patch(url, json={"ingress_enabled": False}).json()["data"]
    assert kept["auto_pause_after_seconds"] is None, "an omitted field is left unchanged"
    fail(api.patch(url, json={"disable_auto_pause": True, "auto_pause_after_seconds": 60}), 400,
         "disable_auto_pause")  # fmt: skip


def test_pause_and_resume_answer_the_view_202_then_200(api: httpx.Client) -> None:
    made = create(api)
    url = f"/v1/sandboxes/{made['id']}"
    paused = api.post(f"{url}/pause")
    assert paused.status_code == 202 and float(paused.headers["X-Poll-After"]) >= 0
    assert set(paused.json()["data"]) >= VIEW and paused.json()["data"]["status"] == "paused"
    again = api.post(f"{url}/pause")
    assert again.status_code == 200 and again.json()["data"]["status"] == "paused"
    assert "X-Poll-After" in again.headers
    resumed = api.post(f"{url}/resume")
    assert resumed.status_code == 202 and resumed.json()["data"]["status"] == "running"
    assert set(resumed.json()["data"]) >= VIEW and "X-Poll-After" in resumed.headers
    assert api.post(f"{url}/resume").status_code == 200
    api.delete(url)
    fail(api.post(f"{url}/pause"), 409, "status")  # §4.1: not running is a 409
    fail(api.post(f"{url}/resume"), 409, "status")


def test_delete_answers_id_and_status_destroyed_and_is_idempotent(api: httpx.Client) -> None:
    made = create(api)
    for _ in range(2):
        gone = api.delete(f"/v1/sandboxes/{made['id']}")
        assert gone.status_code == 200
        assert gone.json()["data"] == {"id": made["id"], "status": "destroyed"}


def test_another_users_sandbox_is_a_404_like_a_missing_one(
    api: httpx.Client, fake_server: HutchProcess
) -> None:
    made = create(api)
    with client_of(fake_server) as other:
        for method, suffix in (("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/pause"),
                               ("POST", "/resume")):  # fmt: skip
            theirs = other.request(method, f"/v1/sandboxes/{made['id']}{suffix}",
                                   json={} if method == "PATCH" else None)  # fmt: skip
            missing = other.request(method, f"/v1/sandboxes/sb_missing{suffix}",
                                    json={} if method == "PATCH" else None)  # fmt: skip
            assert theirs.status_code == missing.status_code == 404, (method, suffix)
    assert api.get(f"/v1/sandboxes/{made['id']}").json()["data"]["status"] == "running"
