from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.internet import Internet
from tests.support.server import HutchProcess


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def server(home: Path) -> Iterator[HutchProcess]:
    """A fresh ``hutch serve`` on SQLite, on a free loopback port."""
    process = HutchProcess(home).wait_ready()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def internet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Internet]:
    """The tests' small internet (tests.support.internet): HTTP servers, an authoritative
    DNS server for the test zone (give ``internet.resolver`` to hutch as
    ``HUTCH_DNS_UPSTREAM``), pypiserver and verdaccio, in a namespace routed from the host.
    Everything it made is removed at the end of the session, also after a failure."""
    net = Internet(tmp_path_factory.mktemp("internet"))
    try:
        yield net.start()
    finally:
        net.stop()
