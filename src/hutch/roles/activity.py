"""Sandbox activity seen by a control worker, for the host agent's auto-pause.

A worker runs a buffered exec of a running sandbox on its own host by talking to the
sandbox's guest agent itself (:mod:`hutch.roles.local_exec`), so the host agent, which
auto-pauses idle sandboxes, would not see that activity. The worker notes it where the
agent reads it: ``$HUTCH_HOME/run/activity/<sandbox id>``, a file whose modification time
is the last activity a worker saw, set when an exec starts and when it ends (as the
agent's own exec path notes it in memory). The agent reads it only when it is about to
pause a sandbox for being idle (a ``stat``), and removes it with the sandbox.

A file, not a message: a note costs the worker one ``utime`` and wakes no other process
(a message per exec took the worker's CPU away to the agent twice per exec), and nothing
is lost when the agent restarts: the next one reads the same files. A worker notes a
sandbox at most once a second (:data:`NOTE_EVERY_S`; auto-pause counts in whole seconds,
at least 60 of them), so a stream of short execs costs no ``utime`` each.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from hutch.roles.paths import run_dir
from hutch.settings import Settings

__all__ = ["NOTE_EVERY_S", "ActivityFiles", "activity_dir"]

NOTE_EVERY_S = 1.0
_MOST_REMEMBERED = 4096


def activity_dir(settings: Settings) -> Path:
    return run_dir(settings) / "activity"


class ActivityFiles:
    """``run/activity/<sandbox id>``: :meth:`note` (a worker), :meth:`last` and
    :meth:`forget` (the agent)."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._noted: dict[str, float] = {}  # when this process last noted each sandbox

    def _path(self, sandbox_id: str) -> Path | None:
        if not sandbox_id or "/" in sandbox_id or sandbox_id.startswith("."):
            return None
        return self._directory / sandbox_id

    def note(self, sandbox_id: str) -> None:
        """Activity in ``sandbox_id`` now (written unless this process did so within the
        last :data:`NOTE_EVERY_S`)."""
        now = time.monotonic()
        last = self._noted.get(sandbox_id)
        if last is not None and now - last < NOTE_EVERY_S:
            return
        path = self._path(sandbox_id)
        if path is None:
            return
        if len(self._noted) >= _MOST_REMEMBERED:
            self._noted.clear()
        self._noted[sandbox_id] = now
        try:
            os.utime(path)
        except FileNotFoundError:
            self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
            os.utime(path)

    def last(self, sandbox_id: str) -> float | None:
        """When a worker last saw activity in ``sandbox_id``, on ``time.monotonic()``'s
        clock; None if none did."""
        path = self._path(sandbox_id)
        if path is None:
            return None
        try:
            stamp = path.stat().st_mtime
        except FileNotFoundError:
            return None
        return time.monotonic() - max(0.0, time.time() - stamp)

    def forget(self, sandbox_id: str) -> None:
        self._noted.pop(sandbox_id, None)
        path = self._path(sandbox_id)
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
