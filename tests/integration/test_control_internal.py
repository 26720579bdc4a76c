"""A worker (``hutch control``, here under ``hutch serve`` with HUTCH_WORKERS=1, fake
driver) never passes a client's request for the agent's internal routes on: they tell
the agent's pid, its host and its warm pool, and need no key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import HutchProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HutchProcess]:
    home: Path = tmp_path_factory.mktemp("home")
    process = HutchProcess(home, "--port", "0", env={"HUTCH_WORKERS": "1"}).wait_ready()
    try:
        yield process
    finally:
        process.stop()


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_the_agents_internal_routes_are_not_reachable_from_the_api_port(
    server: HutchProcess, method: str
) -> None:
    with server.client() as client:
        for key in (None, server.admin_key):
            headers = {"X-Api-Key": key} if key else {}
            answer = client.request(method, "/internal/v1/info", headers=headers)
            assert answer.status_code in (404, 405), (method, answer.text)
            assert "pid" not in answer.text and "host_id" not in answer.text
            assert answer.headers["x-hutch-worker"], "a worker answered it"
        # The API itself is still answered through the same worker.
        whoami = client.get("/v1/whoami", headers={"X-Api-Key": server.admin_key or ""})
        assert whoami.status_code == 200
