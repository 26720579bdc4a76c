"""What the installed runsc can do, found by asking it (never assumed), and the two small
C programs Debian's 2022 runsc needs (see :mod:`hutch.host.drivers.gvisor`): the statx
shim loaded in every sandbox, and ``hutch-sysview``, which hides ``/proc/sys/net`` from
``runsc run`` and ``restore`` (one process where the shell's fallback starts ~18)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Any

from hutch.host.drivers.base import DriverError
from hutch.host.drivers.oci import GUEST_PARENT
from hutch.host.proc import CommandFailed, run

__all__ = ["PLATFORMS", "GvisorFeatures", "detect_features"]

log = logging.getLogger(__name__)

PLATFORMS = ("ptrace", "systrap", "kvm")
# Releases before this refuse AT_NO_AUTOMOUNT in stat calls (see shim/statx.c).
_STATX_FIXED = 20240101
_SHIM = Path(__file__).parent / "shim" / "statx.c"
_SYSVIEW = Path(__file__).parent / "shim" / "sysview.c"
# gVisor fixed its root-namespace check (issue 10704) in release-20240807.
_NETNS_CHECK_FIXED = 20240807


class GvisorFeatures:
    """What the installed runsc can do, as found by asking it (never assumed)."""

    def __init__(self, *, version: str, date: int | None, platforms: list[str], flags: set[str],
                 hide_sys_net: bool) -> None:  # fmt: skip
        self.version = version
        self.date = date
        self.platforms = platforms
        self.flags = flags
        self.hide_sys_net = hide_sys_net

    def as_dict(self) -> dict[str, Any]:
        return {"version": self.version, "platforms": self.platforms,
                "hide_sys_net": self.hide_sys_net}  # fmt: skip


async def detect_features(runsc: str) -> GvisorFeatures:
    """Ask ``runsc`` its version, platforms and flags. Raises :class:`DriverError` when it
    is missing or cannot run sandboxes the way hutch needs."""
    try:
        version = (await run(runsc, "--version")).stdout.decode().splitlines()[0].strip()
        shown = await run(runsc, "help", "platforms")
        helptext = (shown.stdout + shown.stderr).decode()
        listed = await run(runsc, "flags")
        flags_text = (listed.stdout + listed.stderr).decode()
    except (CommandFailed, FileNotFoundError, IndexError) as exc:
        raise DriverError(f"runsc ({runsc}) does not run here: {exc}") from exc
    found = re.search(r"(20\d{6})", version)
    date = int(found.group(1)) if found else None
    platforms = [line.strip() for line in helptext.splitlines() if line.strip() in PLATFORMS]
    flags = set(re.findall(r"^\s+-([a-z0-9-]+)", flags_text, re.MULTILINE))
    if "host-uds" not in flags:
        raise DriverError(f"{version} has no --host-uds; hutch needs a runsc from 2021 or later")
    # A kernel that shows rmem_default in every namespace, and a runsc that reads it.
    probe = await run("unshare", "--net", "test", "-e", "/proc/sys/net/core/rmem_default",
                      check=False)  # fmt: skip
    hide = probe.returncode == 0 and (date is None or date < _NETNS_CHECK_FIXED)
    return GvisorFeatures(version=version, date=date, platforms=platforms, flags=flags,
                          hide_sys_net=hide)  # fmt: skip


async def _build_statx_shim(directory: Path) -> Path | None:
    """Compile shim/statx.c (once per version of it) for /etc/ld.so.preload; None, with a
    warning, when the host has no C compiler (then ls and stat fail inside gvisor)."""
    built = await _compile(_SHIM, directory, "-shared", "-fPIC", suffix=".so",
                           without="ls and stat will fail inside gvisor sandboxes")  # fmt: skip
    if built is None:
        return None
    preload = f"{GUEST_PARENT}/statx.so\n"
    await asyncio.to_thread(built.with_suffix(".preload").write_text, preload)
    return built


async def _build_sysview(directory: Path) -> Path | None:
    """Compile shim/sysview.c (once per version of it); None, with a warning, when the
    host has no C compiler (then a shell script does the same with ~18 processes)."""
    return await _compile(_SYSVIEW, directory, suffix="",
                          without="runsc run and restore take ~20 ms more")  # fmt: skip


async def _compile(source_path: Path, directory: Path, *flags: str, suffix: str,
                   without: str) -> Path | None:  # fmt: skip
    """``cc`` ``source_path`` into ``directory``, named after its content's hash (built
    once per version of it, by a rename: never seen half-written)."""
    source = await asyncio.to_thread(source_path.read_bytes)
    name = f"{source_path.stem}-{hashlib.sha256(source).hexdigest()[:12]}"
    built = directory / f"{name}{suffix}"
    if not await asyncio.to_thread(built.exists):
        os.makedirs(directory, exist_ok=True)
        partial = directory / f"{name}.{os.getpid()}.tmp"
        try:
            await run("cc", *flags, "-O2", "-o", str(partial), str(source_path))
        except (CommandFailed, FileNotFoundError) as exc:
            log.warning("cannot build %s (%s): %s", source_path.name, without, exc)
            return None
        os.rename(partial, built)
    return built
