"""The fake driver never takes another process for a sandbox's agent: a pid file outlives
its process, and pids are reused (``pid_max`` is 32768 on many machines), so a sandbox
whose agent is gone must not be reported running, nor its pid's new owner killed (its whole
process group, by ``destroy``: the test session's sweep of leftover fake sandboxes does
that for every home it made)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hutch.host.drivers.base import RuntimeState
from hutch.host.drivers.fake import FakeDriver

pytestmark = pytest.mark.anyio


async def test_a_pid_now_another_process_s_is_not_the_sandbox(tmp_path: Path) -> None:
    driver = FakeDriver(tmp_path / "fake-sandboxes")
    directory = driver.state_dir / "sb_gone"
    (directory / "root").mkdir(parents=True)
    # Another process (a group leader, as a server or a runc init is) has the dead agent's pid.
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        (directory / "pid").write_text(str(stranger.pid))
        info = await driver.get("sb_gone")
        assert info is not None and info.state == RuntimeState.STOPPED and info.pid is None
        assert await driver.cleanup(set()) == ["sb_gone"]
        assert stranger.poll() is None, "the stranger's process group was killed"
        assert not directory.exists()
    finally:
        stranger.kill()
        stranger.wait()
