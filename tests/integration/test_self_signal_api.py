"""Self-signal through the control plane, in-process on the fake driver, on SQLite and
PostgreSQL: the agent's FIFO (under the fake sandbox's root) → the host's watch → the
same pause and destroy an owner's request makes, the reason on the sandbox. The HTTP
endpoint inside runc sandboxes: tests/e2e/test_self_signal_runc.py."""

from __future__ import annotations

import asyncio
import time
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
def client(tmp_path: Path, database_url: str) -> Iterator[TestClient]:
    fake_image(tmp_path / "images", "devbox:1")
    settings = Settings(
        home=tmp_path / "home",
        images_dir=tmp_path / "images",
        driver="fake",
        proxy_enabled=False,
        database_url=database_url,
    )
    with TestClient(create_app(settings)) as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        issued = client.portal.call(services.identity.issue_key, "selfie")  # type: ignore[union-attr]
        client.headers["X-Api-Key"] = str(issued.key)
        yield client
    asyncio.run(FakeDriver(settings.home / "fake-sandboxes").cleanup(set()))


def create(client: TestClient) -> dict[str, Any]:
    made = client.post("/v1/sandboxes", json={"shape": "s-1vcpu-256mb"})
    assert made.status_code == 201, made.text
    data: dict[str, Any] = made.json()["data"]
    return data


def say(client: TestClient, box: dict[str, Any], word: str) -> None:
    """Write ``word`` to the sandbox's /run/self (relative: the fake's root is its cwd),
    from a managed process: an exec would be frozen by the pause before it answers."""
    ran = client.post(
        f"/v1/sandboxes/{box['id']}/processes", json={"cmd": f"echo {word} > run/self"}
    )
    assert ran.status_code == 201, ran.text


def until(client: TestClient, box: dict[str, Any], status: str) -> dict[str, Any]:
    for _ in range(300):
        view: dict[str, Any] = client.get(f"/v1/sandboxes/{box['id']}").json()["data"]
        if view["status"] == status:
            return view
        time.sleep(0.05)
    raise AssertionError(f"never {status}: {view}")


def test_park_pauses_with_a_reason_that_resume_clears(client: TestClient) -> None:
    box = create(client)
    say(client, box, "park")
    paused = until(client, box, "paused")
    assert paused["reason"] == "paused from inside the sandbox (self-signal)"
    assert client.post(f"/v1/sandboxes/{box['id']}/resume").status_code == 202
    running = until(client, box, "running")
    assert running["reason"] is None
    # The watch is back after the resume: it can park itself again.
    say(client, box, "park")
    until(client, box, "paused")


def test_retire_destroys_only_the_sandbox_that_asked(client: TestClient) -> None:
    asking, other = create(client), create(client)
    say(client, asking, "nonsense")
    say(client, asking, "retire")
    gone = until(client, asking, "destroyed")
    assert gone["reason"] == "deleted from inside the sandbox (self-signal)"
    assert client.get(f"/v1/sandboxes/{other['id']}").json()["data"]["status"] == "running"
