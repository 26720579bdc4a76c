"""/v1/disks in-process against a real S3 server (SeaweedFS on loopback): seed 002's
registration contract, its errors row by row, and credentials that never come back."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hutch.api.app import create_app
from hutch.host.drivers.fake import FakeDriver
from hutch.settings import Settings
from hutch.store.models import DiskRecord
from tests.integration.test_sandboxes_api import _key, app_settings
from tests.support.seaweed import ROTATED_ACCESS_KEY, ROTATED_SECRET_KEY, SeaweedS3

__all__ = ["app_settings"]  # fixture

_buckets = itertools.count()


@pytest.fixture
def client(app_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(app_settings)) as client:
        client.headers["X-Api-Key"] = _key(client, "alice")
        yield client
    # The app leaves sandboxes running when it stops (a restart adopts them); tests don't.
    asyncio.run(FakeDriver(app_settings.home / "fake-sandboxes").cleanup(set()))


@pytest.fixture
def bucket(s3: SeaweedS3) -> str:
    return s3.make_bucket(f"bucket-{os.getpid()}-{next(_buckets)}")


def body(s3: SeaweedS3, bucket: str, **changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "name": "my-data",
        "kind": "s3",
        "config": {"bucket": bucket, "endpoint": s3.endpoint, "use_path_style": True},
        "credentials": {"access_key": s3.access_key, "secret_key": s3.secret_key},
    }
    document.update(changes)
    return document


def test_register_list_get_delete_as_the_seed_shows(
    client: TestClient, s3: SeaweedS3, bucket: str, app_settings: Settings
) -> None:
    made = client.post("/v1/disks", json=body(s3, bucket))
    assert made.status_code == 200, made.text
    disk = made.json()["data"]
    assert set(disk) == {"id", "name", "kind", "config", "created_at"}
    assert disk["id"].startswith("disk_") and disk["name"] == "my-data" and disk["kind"] == "s3"
    assert disk["config"] == {"bucket": bucket, "endpoint": s3.endpoint, "region": "auto",
                              "use_path_style": True}  # fmt: skip
    listed = client.get("/v1/disks").json()["data"]
    assert listed == {"data": [disk], "pagination": {"total": 1, "limit": 50, "offset": 0,
                                                      "count": 1}}  # fmt: skip
    for ident in (disk["id"], "my-data"):
        assert client.get(f"/v1/disks/{ident}").json()["data"] == disk
    for answer in (made, client.get("/v1/disks"), client.get("/v1/disks/my-data")):
        assert s3.secret_key not in answer.text and s3.access_key not in answer.text

    deleted = client.delete("/v1/disks/my-data")
    assert deleted.status_code == 200 and deleted.json()["data"] == {"deleted": True}
    assert client.get("/v1/disks/my-data").status_code == 404
    assert client.delete(f"/v1/disks/{disk['id']}").status_code == 404
    assert client.get("/v1/disks").json()["data"]["data"] == []
    again = client.post("/v1/disks", json=body(s3, bucket))
    assert again.status_code == 200 and again.json()["data"]["id"] != disk["id"]


def test_credentials_are_sealed_at_rest_and_the_key_file_is_private(
    client: TestClient, s3: SeaweedS3, bucket: str, app_settings: Settings
) -> None:
    assert client.post("/v1/disks", json=body(s3, bucket)).status_code == 200
    database = app_settings.home / "hutch.db"
    with sqlite3.connect(database) as conn:
        rows = conn.execute("SELECT * FROM disks").fetchall()
    dump = repr(rows).encode()
    for path in database.parent.glob("hutch.db*"):
        dump += path.read_bytes()
    assert s3.secret_key.encode() not in dump and s3.access_key.encode() not in dump
    key_file = app_settings.home / "master.key"
    assert key_file.stat().st_mode & 0o777 == 0o600


def test_the_probe_says_which_field_is_wrong(
    client: TestClient, s3: SeaweedS3, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    closed = s3.endpoint.rsplit(":", 1)[0] + ":9"  # discard port on loopback: refused
    cases = [
        (body(s3, "no-such-bucket-here"), "config.bucket"),
        (
            body(
                s3, bucket, credentials={"access_key": s3.access_key, "secret_key": "wrong-secret"}
            ),
            "credentials",
        ),
        (body(s3, bucket, config={"bucket": bucket, "endpoint": closed}), "config.endpoint"),
        (
            body(s3, bucket, config={"bucket": bucket, "endpoint": "s3.example.com"}),
            "config.endpoint",
        ),
    ]
    for document, field in cases:
        answer = client.post("/v1/disks", json=document)
        assert answer.status_code == 400, answer.text
        assert answer.json()["status"] == "fail" and field in answer.json()["data"], answer.text
        assert s3.secret_key not in answer.text and "wrong-secret" not in answer.text
    assert client.get("/v1/disks").json()["data"]["data"] == [], "nothing stored"
    assert s3.secret_key not in caplog.text and "wrong-secret" not in caplog.text


def test_validation_and_conflicts(client: TestClient, s3: SeaweedS3, bucket: str) -> None:
    good = body(s3, bucket)
    bad = [
        {**good, "name": "My Data"},
        {**good, "name": ""},
        {**good, "kind": "gcs"},
        {k: v for k, v in good.items() if k != "credentials"},
        {**good, "config": {"endpoint": s3.endpoint}},
        {**good, "credentials": {"access_key": s3.access_key}},
        {**good, "credentials": {"access_key": "", "secret_key": ""}},
    ]
    for document in bad:
        answer = client.post("/v1/disks", json=document)
        assert answer.status_code == 400 and answer.json()["status"] == "fail", document
        assert s3.secret_key not in answer.text
    assert client.post("/v1/disks", json=good).status_code == 200
    duplicate = client.post("/v1/disks", json=good)
    assert duplicate.status_code == 409 and "name" in duplicate.json()["data"]

    bob = {"X-Api-Key": _key(client, "bob")}
    mine = client.get("/v1/disks/my-data").json()["data"]["id"]
    theirs = client.get(f"/v1/disks/{mine}", headers=bob)
    missing = client.get("/v1/disks/disk_nope", headers=bob)
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["data"].keys() == missing.json()["data"].keys()
    assert client.delete(f"/v1/disks/{mine}", headers=bob).status_code == 404
    assert client.post("/v1/disks", json=good, headers=bob).status_code == 200, "per user"
    client.headers.pop("X-Api-Key")
    assert client.get("/v1/disks").status_code == 401


@pytest.mark.parametrize("problem", ["switched off", "bad key file"])
def test_without_a_master_key_disks_answer_503(
    tmp_path: Path, app_settings: Settings, problem: str
) -> None:
    settings = app_settings
    if problem == "switched off":
        settings = app_settings.model_copy(update={"disks_enabled": False})
    else:
        key_file = app_settings.home / "master.key"
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_text("not a key\n")
        key_file.chmod(0o600)
    with TestClient(create_app(settings)) as client:
        client.headers["X-Api-Key"] = _key(client, "alice")
        for method, path in [("GET", "/v1/disks"), ("POST", "/v1/disks"),
                             ("GET", "/v1/disks/x"), ("DELETE", "/v1/disks/x")]:  # fmt: skip
            answer = client.request(method, path, json={
                "name": "x", "kind": "s3", "config": {"bucket": "b", "endpoint": "http://x"},
                "credentials": {"access_key": "a", "secret_key": "s"}})  # fmt: skip
            assert answer.status_code == 503, (path, answer.text)
            assert answer.json()["status"] == "error" and "disks" in answer.json()["message"]
        assert client.get("/v1/sandboxes").status_code == 200, "the rest works"


def test_attachments_through_the_api(client: TestClient, s3: SeaweedS3, bucket: str) -> None:
    disk = client.post("/v1/disks", json=body(s3, bucket)).json()["data"]
    disks = [{"disk_id": "my-data", "mount_path": "/data"}]
    box = client.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb", "disks": disks})
    box = box.json()["data"]
    listed = client.get(f"/v1/sandboxes/{box['id']}/disks").json()["data"]
    assert listed["pagination"] == {"total": 1, "limit": 50, "offset": 0, "count": 1}
    assert listed["data"][0]["mount_status"] == "mounted"
    assert client.get("/v1/sandboxes/sb_nope/disks").status_code == 404
    url = f"/v1/sandboxes/{box['id']}/disks/{disk['id']}"
    assert client.delete(url).status_code == 400, "mount_path is required"
    assert client.delete(url, params={"mount_path": "/data"}).json()["data"] == {"detached": True}
    assert client.delete(url, params={"mount_path": "/data"}).status_code == 404
    assert client.get(f"/v1/sandboxes/{box['id']}/disks").json()["data"]["data"] == []


def test_credentials_rotate_only_after_the_bucket_accepts_them(
    client: TestClient, s3: SeaweedS3, bucket: str
) -> None:
    disk = client.post("/v1/disks", json=body(s3, bucket)).json()["data"]
    box = client.post(
        "/v1/sandboxes",
        json={"shape": "s-1vcpu-256mb", "disks": [{"disk_id": "my-data", "mount_path": "/d"}]},
    ).json()["data"]
    services = client.app.state.services  # type: ignore[attr-defined]

    async def load() -> DiskRecord:
        async with services.db.sessions() as session:
            record: DiskRecord | None = await session.get(DiskRecord, disk["id"])
        assert record is not None
        return record

    def stored() -> str:
        record = client.portal.call(load)  # type: ignore[union-attr]
        return str(services.disks.credentials(record).access_key)

    refused = client.patch(
        f"/v1/disks/{disk['id']}",
        json={"credentials": {"access_key": ROTATED_ACCESS_KEY, "secret_key": "wrong"}},
    )
    assert refused.status_code == 400 and "credentials" in refused.json()["data"]
    assert stored() == s3.access_key, "a refused rotation changes nothing"
    rotated = client.patch(
        "/v1/disks/my-data",
        json={"credentials": {"access_key": ROTATED_ACCESS_KEY, "secret_key": ROTATED_SECRET_KEY}},
    )
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["data"] == disk, "the same disk, and no credentials in it"
    assert ROTATED_SECRET_KEY not in rotated.text
    assert stored() == ROTATED_ACCESS_KEY
    [row] = client.get(f"/v1/sandboxes/{box['id']}/disks").json()["data"]["data"]
    assert row["mount_status"] == "mounted"
    for bad in ({}, {"credentials": {"access_key": "a"}}, {"credentials": {"access_key": "",
                "secret_key": ""}}, {"credentials": {"access_key": "a", "secret_key": "b"},
                "name": "x"}):  # fmt: skip
        assert client.patch("/v1/disks/my-data", json=bad).status_code == 400, bad
    assert client.patch("/v1/disks/nope", json={"credentials": {"access_key": "a",
                        "secret_key": "b"}}).status_code == 404  # fmt: skip
