"""Fixtures shared by every test: real backends, started here and stopped afterwards."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from hutch.settings import Settings
from hutch.store.db import Database
from hutch.store.migrate import upgrade
from tests.support.postgres import PostgresServer
from tests.support.seaweed import SeaweedS3

_db_names = itertools.count()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL 15 server for the session; each test takes a fresh database in it."""
    server = PostgresServer(Path(tempfile.mkdtemp(prefix="hutch-test-pg-")))
    server.init()
    server.start()
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def s3() -> Iterator[SeaweedS3]:
    """One real S3 server (SeaweedFS) on loopback for the session."""
    server = SeaweedS3(Path(tempfile.mkdtemp(prefix="hutch-test-s3-"))).start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database URL on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hutch.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create_database(f"hutch_test_{next(_db_names)}")


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """A migrated database on each backend."""
    database = Database(database_url)
    await upgrade(database)
    yield database
    await database.dispose()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", port=0, driver="fake", proxy_enabled=False)


IMAGES_CACHE = Path(os.environ.get("HUTCH_TEST_IMAGES", "/var/cache/hutch-test-images"))


@pytest.fixture(scope="session")
def images() -> Path:
    """Real images (devbox:1 and node), built once with mmdebstrap and kept between runs;
    a rebuild happens only when a recipe changes."""
    env = {**os.environ, "HUTCH_IMAGES_DIR": str(IMAGES_CACHE)}
    subprocess.run(
        [sys.executable, "-m", "hutch", "images", "build", "--all"],
        env=env,
        check=True,
        stdin=subprocess.DEVNULL,
        timeout=1800,
    )
    return IMAGES_CACHE
