"""``/v1/disks`` and a sandbox's disks as CREATEOS-API.md §13 and §20.6 say, against a real
S3 server (SeaweedFS on loopback); the fake driver's mounts (real runc mounts are in
tests/e2e/test_disks_runc.py and tests/e2e/test_createos_sdk.py)."""

from __future__ import annotations

import itertools
import os
from typing import Any

import httpx

from tests.support.seaweed import ROTATED_ACCESS_KEY, ROTATED_SECRET_KEY, SeaweedS3

MOUNT_STATUSES = {"pending", "mounted", "error", "unmounting"}
DISK = {"id", "name", "kind", "config", "created_at"}
ATTACHMENT = {"disk_id", "name", "kind", "config", "mount_path", "sub_path", "mount_status",
              "mount_error"}  # fmt: skip
_names = itertools.count()


def register(api: httpx.Client, s3: SeaweedS3) -> dict[str, Any]:
    bucket = s3.make_bucket(f"contract-{os.getpid()}-{next(_names)}")
    answer = api.post("/v1/disks", json={
        "name": f"data-{next(_names)}", "kind": "s3",
        "config": {"bucket": bucket, "endpoint": s3.endpoint, "use_path_style": True},
        "credentials": {"access_key": s3.access_key, "secret_key": s3.secret_key},
    })  # fmt: skip
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()["data"]
    assert set(data) == DISK and "credentials" not in answer.text
    return data


def test_attach_answers_the_sandbox_id_and_ok(api: httpx.Client, s3: SeaweedS3) -> None:
    disk = register(api, s3)
    box = api.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb"}).json()["data"]
    for ident in (disk["name"], disk["id"]):  # the same path again: idempotent
        answer = api.post(f"/v1/sandboxes/{box['name']}/disks",
                          json={"disk_id": ident, "mount_path": "/mnt/data"})  # fmt: skip
        assert answer.status_code == 200, answer.text
        assert answer.json()["data"] == {"id": box["id"], "ok": True}
    listed = api.get(f"/v1/sandboxes/{box['id']}/disks").json()["data"]
    assert set(listed) == {"data", "pagination"}
    [row] = listed["data"]
    assert set(row) == ATTACHMENT and row["mount_status"] in MOUNT_STATUSES
    assert row["mount_status"] == "mounted" and row["disk_id"] == disk["id"]


def test_attach_errors(api: httpx.Client, s3: SeaweedS3) -> None:
    disk = register(api, s3)
    box = api.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb"}).json()["data"]
    url = f"/v1/sandboxes/{box['id']}/disks"
    cases = [({"disk_id": disk["id"], "mount_path": "relative"}, 400),
             ({"disk_id": disk["id"], "mount_path": "/a/../b"}, 400),
             ({"disk_id": disk["id"], "mount_path": "/m", "sub_path": "../x"}, 400),
             ({"disk_id": "", "mount_path": "/m"}, 400),
             ({"disk_id": "disk_missing", "mount_path": "/m"}, 404),
             ({"disk_id": disk["id"], "mount_path": "/m", "extra": 1}, 400)]  # fmt: skip
    for body, status in cases:
        answer = api.post(url, json=body)
        assert answer.status_code == status and answer.json()["status"] == "fail", body
    api.post(f"/v1/sandboxes/{box['id']}/pause")
    paused = api.post(url, json={"disk_id": disk["id"], "mount_path": "/m"})
    assert paused.status_code == 409, "§13: the sandbox must be running"


def test_detach_first_delete_wins(api: httpx.Client, s3: SeaweedS3) -> None:
    disk = register(api, s3)
    box = api.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb"}).json()["data"]
    api.post(f"/v1/sandboxes/{box['id']}/disks", json={"disk_id": disk["id"], "mount_path": "/d"})
    assert api.delete(f"/v1/disks/{disk['id']}").status_code == 409, "attached"
    url = f"/v1/sandboxes/{box['id']}/disks/{disk['id']}"
    assert api.delete(url, params={"mount_path": "/d"}).json()["data"] == {"detached": True}
    assert api.delete(url, params={"mount_path": "/d"}).status_code == 404
    assert api.get(f"/v1/sandboxes/{box['id']}/disks").json()["data"]["data"] == []
    assert api.delete(f"/v1/disks/{disk['id']}").json()["data"] == {"deleted": True}


def test_patch_rotates_credentials_after_probing(api: httpx.Client, s3: SeaweedS3) -> None:
    disk = register(api, s3)
    box = api.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb"}).json()["data"]
    api.post(f"/v1/sandboxes/{box['id']}/disks", json={"disk_id": disk["id"], "mount_path": "/d"})
    refused = api.patch(f"/v1/disks/{disk['name']}", json={
        "credentials": {"access_key": ROTATED_ACCESS_KEY, "secret_key": "not-it"}})  # fmt: skip
    assert refused.status_code == 400 and "credentials" in refused.json()["data"]
    new = {"access_key": ROTATED_ACCESS_KEY, "secret_key": ROTATED_SECRET_KEY}
    rotated = api.patch(f"/v1/disks/{disk['id']}", json={"credentials": new})
    assert rotated.status_code == 200 and rotated.json()["data"] == disk
    [row] = api.get(f"/v1/sandboxes/{box['id']}/disks").json()["data"]["data"]
    assert row["mount_status"] == "mounted"
    unknown = api.patch(f"/v1/disks/{disk['id']}", json={"name": "renamed"})
    assert unknown.status_code == 400 and "name" in unknown.json()["data"]
