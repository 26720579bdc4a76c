"""Remove the empty cgroup parents (``/hutch-<tag>`` in every hierarchy) of the homes a
test session made.

A home's parents go with ``hutch host cleanup`` (the driver's ``uninstall``), but a home
whose agent refused to start, or a driver fixture that only destroys its sandboxes,
leaves them: a few hundred empty directories on a developer's machine after a day of
runs. Only empty ones are removed (``rmdir`` refuses the others), so nothing a test or an
operator still runs is touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

__all__ = ["remove_empty_parents"]

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _tags(root: Path, depth: int) -> set[str]:
    """The instance tags (``hutch.host.drivers.runc.instance_tag``) of every directory
    within ``depth`` levels under ``root``: a test's home is ``tmp_path/...`` a level or
    two down."""
    tags: set[str] = set()
    for directory, children, _ in os.walk(root):
        tags.add(hashlib.sha256(directory.encode()).hexdigest()[:6])
        if directory.count(os.sep) - str(root).count(os.sep) >= depth:
            children[:] = []
    return tags


def remove_empty_parents(root: Path, depth: int = 3) -> int:
    """rmdir ``/hutch-<tag>`` in each cgroup hierarchy for the homes under ``root``;
    return how many directories went."""
    if not CGROUP_ROOT.is_dir():
        return 0
    hierarchies = [CGROUP_ROOT]
    if not (CGROUP_ROOT / "cgroup.controllers").exists():  # cgroup v1: one per controller
        hierarchies = [path for path in CGROUP_ROOT.iterdir() if path.is_dir()]
    removed = 0
    for tag in _tags(root, depth):
        for hierarchy in hierarchies:
            with contextlib.suppress(OSError):  # absent, or not empty: left as it is
                (hierarchy / f"hutch-{tag}").rmdir()
                removed += 1
    return removed
