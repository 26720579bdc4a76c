"""What stops a gVisor checkpoint, read by the guest agent before its ``hibernate`` op
closes its socket: the sandbox's open TCP connections and the deleted files of its disk
still open (Debian's 2022 runsc can save neither: the checkpoint fails and the sandbox
stops). Standard library only, as all of the agent."""

from __future__ import annotations

import os
from contextlib import suppress

# /proc/net/tcp states that hold no connection: LISTEN and CLOSE.
_NOT_CONNECTED = ("0A", "07")


def open_tcp_connections() -> list[str]:
    """The sandbox's TCP sockets that are neither listening nor closed, as
    ``local->remote`` in hex (as ``/proc/net/tcp`` shows them)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as handle:
                lines = handle.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] not in _NOT_CONNECTED:
                found.append(f"{fields[1]}->{fields[2]}")
    return found


# Filesystems a checkpoint saves whole (kept in memory): a deleted file open there is saved.
_IN_MEMORY = ("tmpfs", "ramfs", "devtmpfs")


def open_deleted_files() -> list[str]:
    """Files of the sandbox's disk that a process deleted but still holds open or mapped
    (or a deleted directory it works in), as ``pid (name): path``: ``runsc checkpoint``
    cannot save them (Debian's 2022 runsc fails, and the sandbox stops). Not those of a
    filesystem kept in memory (``/tmp``, ``/dev/shm``), nor memfds: a checkpoint saves
    those whole."""
    mounts = []
    with suppress(OSError), open("/proc/self/mounts") as handle:
        for line in handle:
            fields = line.split()
            if len(fields) > 2:
                mounts.append((fields[1].replace("\\040", " "), fields[2]))
    found: set[str] = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        paths = []
        with suppress(OSError):
            for link in ["cwd", "root"] + [f"fd/{fd}" for fd in os.listdir(f"/proc/{pid}/fd")]:
                with suppress(OSError):
                    paths.append(os.readlink(f"/proc/{pid}/{link}"))
        with suppress(OSError), open(f"/proc/{pid}/maps") as handle:
            paths.extend(line.split(None, 5)[-1].rstrip("\n") for line in handle if "/" in line)
        for target in paths:
            if not target.endswith(" (deleted)") or not target.startswith("/"):
                continue
            path = target[: -len(" (deleted)")]
            if path.startswith("/memfd:") or _mount_type(mounts, path) in _IN_MEMORY:
                continue
            name = ""
            with suppress(OSError), open(f"/proc/{pid}/comm") as handle:
                name = handle.read().strip()
            found.add(f"{pid} ({name}): {path}")
    return sorted(found)


def _mount_type(mounts: list[tuple[str, str]], path: str) -> str:
    """The type of the filesystem ``path`` is on: the longest mount point above it."""
    best, kind = -1, ""
    for point, fstype in mounts:
        above = point == "/" or path == point or path.startswith(point.rstrip("/") + "/")
        if above and len(point) >= best:  # (a later mount hides an earlier one)
            best, kind = len(point), fstype
    return kind
