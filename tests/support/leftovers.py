"""What the homes of a test session left on the machine, removed at its end.

**Fake sandboxes.** A server on the fake driver leaves its sandboxes' agent processes
running when it stops (a restart adopts them), paused ones stopped by SIGSTOP; tests that
stop such a server do not always destroy them. Their homes' ``fake-sandboxes`` are
cleaned up here, once every server of the session has stopped.

**Empty cgroup parents** (``/hutch-<tag>`` in every hierarchy). A home's parents go
with ``hutch host cleanup`` (the driver's ``uninstall``), but a home whose agent refused
to start, or a driver fixture that only destroys its sandboxes, leaves them: a few hundred
empty directories on a developer's machine after a day of runs. Only empty ones are
removed (``rmdir`` refuses the others), so nothing a test or an operator still runs is
touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from pathlib import Path

from hutch.host.drivers.fake import FakeDriver

__all__ = ["homes", "remove_empty_parents", "stop_fake_sandboxes"]

CGROUP_ROOT = Path("/sys/fs/cgroup")


_HOME_MARKS = ("hutch.db", "sandboxes", "runc", "run", "fake-sandboxes")
"""What a hutch home holds once an agent or a driver used it (hutch.host.drivers.runc,
hutch.host.agent)."""


def homes(root: Path, depth: int = 3) -> list[Path]:
    """The hutch homes within ``depth`` levels under ``root`` (a test's home is
    ``tmp_path/...`` a level or two down). Only homes: a 6-digit tag of any directory
    could name another live hutch's cgroup parent on this machine by chance."""
    found = []
    for directory, children, _ in os.walk(root):
        if any(os.path.exists(os.path.join(directory, mark)) for mark in _HOME_MARKS):
            found.append(Path(directory))
        if directory.count(os.sep) - str(root).count(os.sep) >= depth:
            children[:] = []
    return found


def stop_fake_sandboxes(found: list[Path]) -> int:
    """Destroy the fake sandboxes of the homes ``found`` (``home/fake-sandboxes``, as
    :class:`hutch.host.agent.HostAgent` names it); return how many there were."""
    states = [home / "fake-sandboxes" for home in found if (home / "fake-sandboxes").is_dir()]
    return sum(len(asyncio.run(FakeDriver(state).cleanup(set()))) for state in states)


def remove_empty_parents(found: list[Path]) -> int:
    """rmdir ``/hutch-<tag>`` in each cgroup hierarchy for the homes ``found`` (their
    :func:`hutch.host.drivers.runc.instance_tag`); return how many directories went."""
    if not CGROUP_ROOT.is_dir():
        return 0
    hierarchies = [CGROUP_ROOT]
    if not (CGROUP_ROOT / "cgroup.controllers").exists():  # cgroup v1: one per controller
        hierarchies = [path for path in CGROUP_ROOT.iterdir() if path.is_dir()]
    removed = 0
    tags = {hashlib.sha256(str(home).encode()).hexdigest()[:6] for home in found}
    for tag in tags:
        for hierarchy in hierarchies:
            with contextlib.suppress(OSError):  # absent, or not empty: left as it is
                (hierarchy / f"hutch-{tag}").rmdir()
                removed += 1
    return removed
