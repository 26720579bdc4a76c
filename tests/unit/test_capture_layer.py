"""capture_layer's promise that a running sandbox is never left frozen, with a stand-in for
runc's freezer (a real one: tests/integration/test_snapshot_runc.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from hutch.host import snapshot
from hutch.host.proc import CommandFailed, CommandResult

pytestmark = pytest.mark.anyio


class Freezer:
    """Like 'runc pause'/'runc resume' run through hutch.host.proc.run: a cancelled caller
    stops waiting, but the command it started goes on to the end."""

    def __init__(self) -> None:
        self.state = "running"
        self.pausing: asyncio.Task[None] | None = None
        self.freezing_started = asyncio.Event()

    async def _pause(self) -> None:
        await asyncio.sleep(0.1)
        self.state = "frozen"

    async def freeze(self) -> None:
        self.pausing = asyncio.ensure_future(self._pause())
        self.freezing_started.set()
        await asyncio.shield(self.pausing)

    async def thaw(self) -> None:
        await asyncio.sleep(0)
        if self.state != "frozen":
            raise CommandFailed(("runc", "resume"), CommandResult(1, b"", b"not paused"))
        self.state = "running"


@pytest.fixture
def disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    async def copy(layer: Path, upper: Path, holder: Path) -> None:
        holder.mkdir()

    async def drop(holder: Path) -> None:
        pass

    monkeypatch.setattr(snapshot, "overlay_lowers", lambda point: [tmp_path / "image"])
    monkeypatch.setattr(snapshot, "_copy_layer", copy)
    monkeypatch.setattr(snapshot, "_drop_copy", drop)

    class Disk:
        layer = tmp_path / "layer"
        rootfs = tmp_path / "rootfs"

    Disk.layer.mkdir()
    return Disk()


async def test_a_capture_cancelled_while_freezing_still_thaws_the_sandbox(disk: Any) -> None:
    freezer = Freezer()

    async def capture() -> None:
        async with snapshot.capture_layer(disk, freeze=freezer.freeze, thaw=freezer.thaw):
            pass

    task = asyncio.ensure_future(capture())
    await freezer.freezing_started.wait()
    task.cancel()  # a build cancelled, a server shutting down
    with pytest.raises(asyncio.CancelledError):
        await task
    assert freezer.pausing is not None
    assert freezer.pausing.done()  # the pause went on to the end, and the thaw came after
    assert freezer.state == "running"


async def test_a_freeze_that_fails_is_the_error_reported(disk: Any) -> None:
    async def refused() -> None:
        raise CommandFailed(("runc", "pause"), CommandResult(1, b"", b"cgroup gone"))

    freezer = Freezer()
    with pytest.raises(snapshot.SnapshotError, match="cgroup gone"):
        async with snapshot.capture_layer(disk, freeze=refused, thaw=freezer.thaw):
            pass
    assert freezer.state == "running"


async def test_a_capture_freezes_copies_and_thaws(disk: Any) -> None:
    freezer = Freezer()
    async with snapshot.capture_layer(disk, freeze=freezer.freeze, thaw=freezer.thaw) as got:
        assert freezer.state == "running" and got.upper.parent.is_dir()
        assert got.frozen_ms > 0
