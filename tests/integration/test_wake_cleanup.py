"""A wake's clean-up (its snapshot removed, the stored one forgotten, its disks mounted
again) never stops the write that says the sandbox runs: the sandbox is running by then
and its snapshot may be gone, so a row left hibernated would make the next resume stop
it. In-process on the fake driver, whose ``wake`` (a hibernated sandbox's start from its
snapshot) stands for gVisor's here by resuming the paused sandbox."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from hutch.host.drivers.base import RuntimeInfo, SandboxSpec
from hutch.store.models import SandboxRecord
from tests.support.inprocess import fake_app_client


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    yield from fake_app_client(tmp_path)


def test_a_wake_whose_clean_up_fails_still_leaves_the_sandbox_running(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    services: Any = client.app.state.services  # type: ignore[attr-defined]
    driver = services.host_agent.driver
    made = client.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb"})
    assert made.status_code == 201, made.text
    box = made.json()["data"]
    assert client.post(f"/v1/sandboxes/{box['id']}/pause").status_code in (200, 202)

    async def hibernated() -> None:
        async with services.db.sessions.begin() as session:
            mark = update(SandboxRecord).where(SandboxRecord.id == box["id"])
            await session.execute(mark.values(hibernated=True))

    client.portal.call(hibernated)  # type: ignore[union-attr]
    woken: list[str] = []

    async def wake(spec: SandboxSpec, snapshot: Path) -> RuntimeInfo:
        woken.append(spec.id)
        await driver.resume(spec.id)
        info = await driver.get(spec.id)
        assert info is not None
        return info

    async def remount_fails(sandbox_id: str) -> None:
        raise RuntimeError("the store went away")

    monkeypatch.setattr(driver, "wake", wake)
    monkeypatch.setattr(services.sandboxes._disks, "remount_all", remount_fails)
    resumed = client.post(f"/v1/sandboxes/{box['id']}/resume")
    assert resumed.status_code == 202, resumed.text
    assert woken == [box["id"]]
    view = client.get(f"/v1/sandboxes/{box['id']}").json()["data"]
    assert view["status"] == "running", view
    ran = client.post(f"/v1/sandboxes/{box['id']}/exec", json={"cmd": "echo woke-up"})
    assert ran.status_code == 200 and "woke-up" in ran.text, ran.text
    # Paused again, it is a plain pause (not a wake): the row no longer says hibernated.
    assert client.post(f"/v1/sandboxes/{box['id']}/pause").status_code in (200, 202)
    assert client.post(f"/v1/sandboxes/{box['id']}/resume").status_code == 202
    assert woken == [box["id"]]
