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


def start_agent(sock: Path, root: Path, **popen: Any) -> subprocess.Popen[bytes]:
    """Start the agent serving ``sock`` with ``root`` as its ``/``; return once it listens."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-S",
            "-E",
            "-s",
            "-c",
            bootstrap(GUEST_PARENT),
            "--socket",
            str(sock),
            "--root",
            str(root),
        ],
        **popen,
    )
    deadline = time.monotonic() + 10
    while not sock.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return proc
