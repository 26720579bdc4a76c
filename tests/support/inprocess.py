"""hutch's app in the test's process, on the fake driver, with a user's key set."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from hutch.api.app import create_app
from hutch.host.drivers.fake import FakeDriver
from hutch.settings import Settings
from tests.support.images import fake_image

__all__ = ["fake_app_client"]


def fake_app_client(tmp_path: Path, user: str = "alice") -> Iterator[TestClient]:
    """A TestClient of the whole app (fake driver, a fake ``devbox:1``, no proxy) whose
    requests carry ``user``'s key; its fake sandboxes are destroyed afterwards. For a
    fixture: ``yield from fake_app_client(tmp_path)``."""
    fake_image(tmp_path / "images", "devbox:1")
    settings = Settings(home=tmp_path / "home", images_dir=tmp_path / "images", driver="fake",
                        proxy_enabled=False)  # fmt: skip
    with TestClient(create_app(settings)) as client:
        services: Any = client.app.state.services  # type: ignore[attr-defined]
        portal: Any = client.portal
        client.headers["X-Api-Key"] = str(portal.call(services.identity.issue_key, user).key)
        yield client
    asyncio.run(FakeDriver(settings.home / "fake-sandboxes").cleanup(set()))
