"""Contract tests: each module checks one resource of the CreateOS dialect against a real
``hutch serve``, written from shared/reference/CREATEOS-API.md (field names, status codes,
frames) and its §20 decisions, not from hutch's code. Control-plane shapes run on the fake
driver; exec and files on runc. One server of each for the whole directory (every test
makes a user of its own, so nothing it counts is another test's)."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hutch.host.drivers.fake import FakeDriver
from tests.e2e.test_sandboxes_runc import runc_server
from tests.support.images import fake_image
from tests.support.server import HutchProcess, remove_instance

REGION = "contract-1"
LABELS = "tier=gold,zone=a"
FILES_MAX_BYTES = 1024 * 1024

_users = itertools.count()


@pytest.fixture(scope="package")
def fake_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HutchProcess]:
    root = tmp_path_factory.mktemp("contract-fake")
    fake_image(root / "images", "devbox:1")
    server = HutchProcess(
        root / "home",
        env={"HUTCH_IMAGES_DIR": str(root / "images"), "HUTCH_REGION": REGION,
             "HUTCH_HOST_LABELS": LABELS, "HUTCH_MONITOR_INTERVAL_S": "0.2"},
    ).wait_ready()  # fmt: skip
    yield server
    server.stop()
    # A stopped server leaves its sandboxes (here: plain processes) for a restart to adopt.
    asyncio.run(FakeDriver(server.home / "fake-sandboxes").cleanup(set()))


@pytest.fixture(scope="package")
def runc(tmp_path_factory: pytest.TempPathFactory, images: Path) -> Iterator[HutchProcess]:
    # Pools of its own, apart from every e2e server's (make test runs tests/e2e beside this).
    block = (os.getpid() % 64) * 4
    server = runc_server(
        tmp_path_factory.mktemp("contract-runc") / "home",
        images,
        pool=f"10.110.{block}.0/22",
        env={"HUTCH_FILES_MAX_BYTES": str(FILES_MAX_BYTES), "HUTCH_MONITOR_INTERVAL_S": "0.2",
             "HUTCH_NETWORK_POOL": f"10.111.{block}.0/22"},
    )  # fmt: skip
    yield server
    server.stop()
    remove_instance(server.home)


def client_of(server: HutchProcess) -> httpx.Client:
    """A client with a key of a user of its own (so counts start at zero)."""
    key = server.new_key(f"c{next(_users)}")
    return server.client(key)


@pytest.fixture
def api(fake_server: HutchProcess) -> Iterator[httpx.Client]:
    with client_of(fake_server) as client:
        yield client


@pytest.fixture
def runc_api(runc: HutchProcess) -> Iterator[httpx.Client]:
    with client_of(runc) as client:
        client.timeout = httpx.Timeout(120)
        yield client
