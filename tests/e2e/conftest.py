from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

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
