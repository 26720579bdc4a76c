"""The guest agent as a plain process (the fake driver's mode), for protocol tests."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hutch.guest import bootstrap
from hutch.host.drivers.base import Driver
from hutch.host.drivers.fake import GUEST_PARENT
from hutch.host.guest import ExecExit, ExecOutput, ExecRequest

__all__ = ["sh", "start_agent"]


async def sh(driver: Driver, sandbox_id: str, script: str) -> str:
    """The output of ``/bin/sh -c script`` in the sandbox, which must exit 0."""
    out = bytearray()
    async for event in driver.guest(sandbox_id).exec(ExecRequest(argv=["/bin/sh", "-c", script])):
        if isinstance(event, ExecOutput):
            out.extend(event.data)
        else:
            assert isinstance(event, ExecExit) and event.exit_code == 0, (event, out)
    return out.decode()


def start_agent(
    sock: Path,
    root: Path,
    *,
    self_http: str | None = None,
    self_fifo: Path | None = None,
    **popen: Any,
) -> subprocess.Popen[bytes]:
    """Start the agent serving ``sock`` with ``root`` as its ``/`` (and, if given, the
    self-signal endpoint and FIFO); return once it listens."""
    argv = [sys.executable, "-S", "-E", "-s", "-c", bootstrap(GUEST_PARENT),
            "--socket", str(sock), "--root", str(root)]  # fmt: skip
    if self_http is not None:
        argv += ["--self-http", self_http]
    if self_fifo is not None:
        argv += ["--self-fifo", str(self_fifo)]
    proc = subprocess.Popen(argv, **popen)
    deadline = time.monotonic() + 10
    while self_fifo is not None and not self_fifo.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    _until_it_answers(lambda: _unix(sock), deadline)
    if self_http is not None:
        host, _, port = self_http.rpartition(":")
        _until_it_answers(lambda: socket.create_connection((host, int(port)), timeout=1), deadline)
    return proc


def _unix(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        raise
    return sock


def _until_it_answers(connect: Callable[[], socket.socket], deadline: float) -> None:
    """Until a connection is taken (it listens, not only exists), or the deadline."""
    while time.monotonic() < deadline:
        try:
            connect().close()
            return
        except OSError:
            time.sleep(0.01)
