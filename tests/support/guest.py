"""The guest agent as a plain process (the fake driver's mode), for protocol tests."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hutch.guest import bootstrap
from hutch.host.drivers.fake import GUEST_PARENT

__all__ = ["start_agent"]


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
    waiting_for = [sock, *([self_fifo] if self_fifo is not None else [])]
    while not all(path.exists() for path in waiting_for) and time.monotonic() < deadline:
        time.sleep(0.01)
    if self_http is not None:
        host, _, port = self_http.rpartition(":")
        while time.monotonic() < deadline:
            try:
                import socket

                socket.create_connection((host, int(port)), timeout=1).close()
                break
            except OSError:
                time.sleep(0.01)
    return proc
