"""``POST /v1/sandboxes/{id}/resize`` on the fake driver: what is accepted, what is refused
and with which answer; the stored size moves only when the disk grew."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hutch.api.app import create_app
from hutch.host.drivers.fake import FakeDriver
from hutch.settings import Settings
from tests.support.images import fake_image


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    fake_image(tmp_path / "images", "devbox:1")
    settings = Settings(home=tmp_path / "home", images_dir=tmp_path / "images", driver="fake",
                        proxy_port=0, max_disk_mib=20480)  # fmt: skip
    with TestClient(create_app(settings)) as client:
        yield client
    asyncio.run(FakeDriver(settings.home / "fake-sandboxes").cleanup(set()))


@pytest.fixture
def key(client: TestClient) -> dict[str, str]:
    services = client.app.state.services  # type: ignore[attr-defined]
    assert client.portal is not None
    return {"X-Api-Key": client.portal.call(services.identity.issue_key, "rita").key}


def create(client: TestClient, key: dict[str, str], **body: Any) -> dict[str, Any]:
    made = client.post("/v1/sandboxes", headers=key, json={"shape": "s-1vcpu-256mb", **body})
    assert made.status_code == 201, made.text
    data: dict[str, Any] = made.json()["data"]
    return data


def disk_of(client: TestClient, key: dict[str, str], sandbox_id: str) -> int:
    size: int = client.get(f"/v1/sandboxes/{sandbox_id}", headers=key).json()["data"]["disk_mib"]
    return size


def test_a_larger_size_is_taken_running_or_paused(client: TestClient, key: dict[str, str]) -> None:
    box = create(client, key, disk_mib=1024)
    grown = client.post(f"/v1/sandboxes/{box['id']}/resize", headers=key, json={"disk_mib": 2048})
    assert grown.status_code == 200, grown.text
    assert grown.json() == {"status": "success", "data": {"id": box["id"], "disk_mib": 2048}}
    assert disk_of(client, key, box["id"]) == 2048
    assert client.post(f"/v1/sandboxes/{box['id']}/pause", headers=key).status_code in (200, 202)
    by_name = client.post(f"/v1/sandboxes/{box['name']}/resize", headers=key,
                          json={"disk_mib": 20480})  # fmt: skip
    assert by_name.status_code == 200 and by_name.json()["data"]["disk_mib"] == 20480
    assert client.get(f"/v1/sandboxes/{box['id']}", headers=key).json()["data"]["status"] == (
        "paused"
    )


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"disk_mib": 1024}, "disk_mib", "larger than the disk's 1024 MiB"),
        ({"disk_mib": 512}, "disk_mib", "larger than the disk's 1024 MiB"),
        ({"disk_mib": 20481}, "disk_mib", "at most 20480 (HUTCH_MAX_DISK_MIB)"),
        ({"disk_mib": 0}, "disk_mib", "greater than 0"),
        ({"disk_mib": -5}, "disk_mib", "greater than 0"),
        ({"disk_mib": "big"}, "disk_mib", "integer"),
        ({"disk_mib": 2048.5}, "disk_mib", "integer"),
        ({}, "disk_mib", "required"),
        ({"disk_mib": 2048, "cpu": 2}, "cpu", "not permitted"),
    ],
)
def test_bad_sizes_are_a_400_naming_the_field_and_change_nothing(
    client: TestClient, key: dict[str, str], body: dict[str, Any], field: str, words: str
) -> None:
    box = create(client, key, disk_mib=1024)
    answer = client.post(f"/v1/sandboxes/{box['id']}/resize", headers=key, json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["status"] == "fail"
    assert words in answer.json()["data"][field], answer.json()
    assert disk_of(client, key, box["id"]) == 1024


def test_create_takes_the_same_maximum(client: TestClient, key: dict[str, str]) -> None:
    over = client.post("/v1/sandboxes", headers=key,
                       json={"shape": "s-1vcpu-256mb", "disk_mib": 20481})  # fmt: skip
    assert over.status_code == 400 and "HUTCH_MAX_DISK_MIB" in over.json()["data"]["disk_mib"]


def test_a_sandbox_that_is_gone_keeps_its_recorded_size(
    client: TestClient, key: dict[str, str]
) -> None:
    box = create(client, key, disk_mib=1024)
    # Its processes die behind hutch's back: the driver cannot grow what is not there.
    services = client.app.state.services  # type: ignore[attr-defined]
    pid = int((services.host_agent.driver.state_dir / box["id"] / "pid").read_text())
    os.killpg(pid, signal.SIGKILL)
    lost = client.post(f"/v1/sandboxes/{box['id']}/resize", headers=key, json={"disk_mib": 2048})
    assert lost.status_code == 409, lost.text
    assert disk_of(client, key, box["id"]) == 1024

    other = create(client, key, disk_mib=1024)
    assert client.delete(f"/v1/sandboxes/{other['id']}", headers=key).status_code == 200
    gone = client.post(f"/v1/sandboxes/{other['id']}/resize", headers=key, json={"disk_mib": 2048})
    assert gone.status_code == 409 and "destroyed" in gone.json()["data"]["status"]
    missing = client.post("/v1/sandboxes/sb_NOPE/resize", headers=key, json={"disk_mib": 2048})
    assert missing.status_code == 404


def test_only_the_owner_resizes(client: TestClient, key: dict[str, str]) -> None:
    box = create(client, key, disk_mib=1024)
    made = client.post(f"/v1/sandboxes/{box['id']}/access-token", headers=key)
    token = {"X-Api-Key": made.json()["data"]["token"]}
    refused = client.post(f"/v1/sandboxes/{box['id']}/resize", headers=token,
                          json={"disk_mib": 2048})  # fmt: skip
    assert refused.status_code == 403 and "token" in refused.json()["data"]
    assert disk_of(client, key, box["id"]) == 1024
