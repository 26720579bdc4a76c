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
from tests.support.leftovers import homes, remove_empty_parents, stop_fake_sandboxes
from tests.support.postgres import PostgresServer
from tests.support.seaweed import SeaweedS3

_db_names = itertools.count()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session", autouse=True)
def _session_leftovers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After the session, the fake sandboxes and empty cgroup parents of the homes it made
    are removed (tests.support.leftovers)."""
    yield
    found = homes(tmp_path_factory.getbasetemp())
    stop_fake_sandboxes(found)
    remove_empty_parents(found)


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


DESKTOP_IMAGE = "desktop:1"
_BUILD_ENV = {"HUTCH_IMAGES_DIR": str(IMAGES_CACHE)}


def _build_argv(*names: str) -> list[str]:
    return [sys.executable, "-m", "hutch", "images", "build", *names]


@dataclass
class _Background:
    process: subprocess.Popen[bytes]
    log: Path


_desktop_build: _Background | None = None


@pytest.fixture(scope="session")
def images(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """Real images (devbox:1 and node), built once with mmdebstrap and kept between runs;
    a rebuild happens only when a recipe changes. When the session also has tests of the
    desktop image (``desktop_images``: 4-8 minutes to build on a fresh machine), its build
    starts here too, in the background, so that it overlaps the tests before them."""
    global _desktop_build
    env = {**os.environ, **_BUILD_ENV}
    if _desktop_build is None and any(
        "desktop_images" in getattr(item, "fixturenames", ()) for item in request.session.items
    ):
        log = tmp_path_factory.mktemp("desktop-build") / "build.log"
        with log.open("wb") as out:
            argv = _build_argv(DESKTOP_IMAGE)
            process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                       stderr=out)  # fmt: skip
        _desktop_build = _Background(process, log)
    subprocess.run(_build_argv("devbox:1", "node"), env=env, check=True,
                   stdin=subprocess.DEVNULL, timeout=1800)  # fmt: skip
    yield IMAGES_CACHE
    if _desktop_build is not None and _desktop_build.process.poll() is None:
        _desktop_build.process.kill()  # the session is over; a cut build is redone next time
        _desktop_build.process.wait()


@pytest.fixture(scope="session")
def desktop_images(images: Path) -> Path:
    """The images, ``desktop:1`` among them (its build began with the session's images)."""
    if _desktop_build is None:  # not foreseen at collection
        subprocess.run(_build_argv(DESKTOP_IMAGE), env={**os.environ, **_BUILD_ENV},
                       check=True, stdin=subprocess.DEVNULL, timeout=1800)  # fmt: skip
        return images
    if _desktop_build.process.wait(timeout=1800) != 0:
        tail = _desktop_build.log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"building {DESKTOP_IMAGE} failed:\n{tail}")
    return images
