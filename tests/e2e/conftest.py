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
def fresh_server(home: Path) -> Iterator[HutchProcess]:
    """A fresh ``hutch serve`` on SQLite, on a free loopback port, for this test alone."""
    process = HutchProcess(home).wait_ready()
    yield process
    process.stop()


@pytest.fixture
def server(fresh_server: HutchProcess) -> HutchProcess:
    return fresh_server


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HutchProcess]:
    """One fresh ``hutch serve`` (SQLite, fake driver) for the tests of a module that
    neither restart nor reconfigure it, nor count what the module's other tests made: such a
    module's ``server`` fixture returns this one. A server start is most of such a test's
    time."""
    process = HutchProcess(tmp_path_factory.mktemp("shared") / "home").wait_ready()
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
