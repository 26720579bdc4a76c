"""Fixtures shared by every test: real backends, started here and stopped afterwards."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# py_ecc (under web3 and eth_account) raises the recursion limit to 100,000 on import, and
# with it deep JSON crashes the process instead of raising; imported through hutch's one
# importer first, the limit stays.
import hutch.payments.eth  # noqa: F401
from hutch.settings import Settings
from hutch.store.db import Database
from hutch.store.migrate import upgrade
from tests.support.chain import Anvil
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


@dataclass(frozen=True)
class LocalChains:
    """Two anvil chains standing in for arbitrum and base, each with a usdc and a usdt."""

    arbitrum: Anvil
    base: Anvil
    tokens: dict[str, dict[str, str]]  # chain -> token -> address

    def env(self) -> dict[str, str]:
        values = {}
        for name, chain in (("arbitrum", self.arbitrum), ("base", self.base)):
            values[f"chain_{name}_rpc_url"] = chain.url
            for token, address in self.tokens[name].items():
                values[f"chain_{name}_{token}"] = address
        return values


@pytest.fixture(scope="session")
def chains() -> Iterator[LocalChains]:
    arbitrum, base = Anvil(chain_id=42161).start(), Anvil(chain_id=8453).start()
    tokens = {
        name: {"usdc": chain.deploy_token("Test USD Coin", "USDC"),
               "usdt": chain.deploy_token("Test Tether", "USDT")}
        for name, chain in (("arbitrum", arbitrum), ("base", base))
    }  # fmt: skip
    yield LocalChains(arbitrum=arbitrum, base=base, tokens=tokens)
    arbitrum.stop()
    base.stop()


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
