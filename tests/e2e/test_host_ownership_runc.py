"""One host, one owner of its addresses (issue 18): a second hutch whose link pool is in
use on this host refuses to start and says by what; one home has one agent; ``hutch host
cleanup`` removes all a home left behind, and never under a running hutch."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hutch.host.drivers.runc import RuncDriver
from tests.e2e.test_sandboxes_runc import create, new_pool, runc_server
from tests.support.server import HutchProcess, remove_instance, run_cli


@pytest.fixture
def first(tmp_path: Path, images: Path) -> Iterator[tuple[HutchProcess, str]]:
    pool = new_pool()
    process = runc_server(tmp_path / "first", images, pool=pool)
    try:
        yield process, pool
    finally:
        process.stop()
        remove_instance(process.home)


def refused(home: Path, images: Path, pool: str) -> str:
    """Start a server that must not start; its output."""
    env = {"HUTCH_DRIVER": "runc", "HUTCH_IMAGES_DIR": str(images), "HUTCH_LINK_POOL": pool}
    candidate = HutchProcess(home, env=env)
    try:
        with pytest.raises(RuntimeError, match="did not start") as failed:
            candidate.wait_ready(timeout=60)
        return str(failed.value)
    finally:
        candidate.stop()


def test_a_second_home_on_the_same_pool_is_refused_naming_the_clash(
    first: tuple[HutchProcess, str], tmp_path: Path, images: Path
) -> None:
    server, pool = first
    key = server.new_key("alice")
    with server.client(key) as api:
        box = create(api)
    link = f"hv{RuncDriver(server.home, images=images).tag[:4]}"
    said = refused(tmp_path / "second", images, pool)
    assert f"HUTCH_LINK_POOL {pool} overlaps the address" in said and link in said, said
    assert "hutch host cleanup" in said
    # The same home twice: one agent per home.
    said = refused(server.home, images, new_pool())
    assert "another hutch agent is running with the home" in said, said
    # The first is untouched: its sandbox still answers.
    with server.client(key) as api:
        assert api.get(f"/v1/sandboxes/{box['id']}").json()["data"]["status"] == "running"


def test_cleanup_removes_what_a_home_left_and_waits_for_no_running_hutch(
    tmp_path: Path, images: Path
) -> None:
    pool = new_pool()
    server = runc_server(tmp_path / "old", images, pool=pool)
    try:
        key = server.new_key("bob")
        with server.client(key) as api:
            made = [create(api)["id"] for _ in range(2)]
        busy = run_cli(server.home, "host", "cleanup", "--home", str(server.home), check=False)
        assert busy.returncode == 1 and "another hutch agent is running" in busy.stderr
        assert "Traceback" not in busy.stderr
    finally:
        server.stop()  # leaves its sandboxes running, as a stopped hutch does
    done = run_cli(server.home, "host", "cleanup", "--home", str(server.home))
    assert "removed 2 runc" in done.stdout and all(m in done.stdout for m in made), done.stdout
    again = run_cli(server.home, "host", "cleanup", "--home", str(server.home))
    assert "nothing of" in again.stdout
    typo = run_cli(server.home, "host", "cleanup", "--home", str(tmp_path / "typo"), check=False)
    assert typo.returncode == 1 and "no hutch home" in typo.stderr
    assert not (tmp_path / "typo").exists(), "nothing made for a home that was not there"
    # The pool is free again: another home starts on it.
    other = runc_server(tmp_path / "new", images, pool=pool)
    other.stop()
    remove_instance(other.home)
