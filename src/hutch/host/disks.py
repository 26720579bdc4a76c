"""Buckets mounted into sandboxes: s3fs on the host side, then the mount moved inside.

s3fs runs on the host, as root, so a sandbox gets neither ``/dev/fuse`` nor any extra
capability. Its mount point is ``<sandbox dir>/disks/<attachment id>`` (so destroying the
sandbox unmounts it with everything else of the sandbox); :mod:`hutch.host.nsmount` then
clones that mount into the sandbox's mount namespace at the user's ``mount_path``. The
credentials file s3fs reads lives in the instance's private socket directory, mode 0600,
and is removed as soon as s3fs has read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import hutch.host.nsmount as nsmount
from hutch.host.proc import CommandFailed, run

__all__ = ["BucketMount", "DiskMountError", "DiskMounts", "FakeDiskMounts", "S3fsMounts"]

MOUNT_TIMEOUT_S = 15.0
CHECK_TIMEOUT_S = 5.0
ERROR_BYTES = 1024


class DiskMountError(Exception):
    """A mount failed; the message (at most ~1 KiB) says why, and never holds a secret."""


@dataclass(frozen=True, kw_only=True)
class BucketMount:
    attachment_id: str
    sandbox_id: str
    bucket: str
    sub_path: str  # normalised: "" or "a/b"
    endpoint: str
    region: str
    path_style: bool
    access_key: str
    secret_key: str
    mount_path: str

    def __repr__(self) -> str:
        return f"BucketMount({self.attachment_id}, {self.bucket}/{self.sub_path})"


class DiskMounts(ABC):
    @abstractmethod
    async def mount(self, spec: BucketMount, *, pid: int) -> None:
        """Mount the bucket at ``spec.mount_path`` inside the sandbox whose init is ``pid``.
        All-or-nothing; raises :class:`DiskMountError`."""

    @abstractmethod
    async def unmount(self, sandbox_id: str, attachment_id: str, *, pid: int | None,
                      mount_path: str) -> None:  # fmt: skip
        """Take the mount out of the sandbox (if it still runs) and off the host. Never
        touches the bucket's contents. A missing mount is success."""

    @abstractmethod
    async def check(self, sandbox_id: str, attachment_id: str) -> str | None:
        """None while the mount answers, else why not."""


class S3fsMounts(DiskMounts):
    def __init__(self, *, sandboxes: Path, secrets: Path) -> None:
        self.sandboxes = sandboxes
        self.secrets = secrets

    def host_dir(self, sandbox_id: str, attachment_id: str) -> Path:
        return self.sandboxes / sandbox_id / "disks" / attachment_id

    async def mount(self, spec: BucketMount, *, pid: int) -> None:
        target = self.host_dir(spec.sandbox_id, spec.attachment_id)
        await asyncio.to_thread(target.mkdir, parents=True, exist_ok=True)
        try:
            await self._s3fs(spec, target)
        except DiskMountError:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(target.rmdir)
            raise
        try:
            await run(sys.executable, "-S", nsmount.__file__, "place", str(pid), str(target),
                      spec.mount_path, timeout_s=MOUNT_TIMEOUT_S)  # fmt: skip
        except CommandFailed as exc:
            await self._unmount_host(target)
            raise DiskMountError(f"cannot mount at {spec.mount_path}: {exc.detail}") from None

    async def _s3fs(self, spec: BucketMount, target: Path) -> None:
        self.secrets.mkdir(parents=True, exist_ok=True, mode=0o700)
        passwd = self.secrets / f"{spec.attachment_id}.passwd"
        fd = os.open(passwd, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{spec.access_key}:{spec.secret_key}\n")
        source = spec.bucket + (f":/{spec.sub_path}" if spec.sub_path else "")
        options = [
            f"passwd_file={passwd}", f"url={spec.endpoint}", f"endpoint={spec.region}",
            "allow_other", "umask=0000", "retries=2", "connect_timeout=5", "readwrite_timeout=30",
        ]  # fmt: skip
        if spec.path_style:
            options.append("use_path_request_style")
        try:
            await run("s3fs", source, str(target), "-o", ",".join(options),
                      timeout_s=MOUNT_TIMEOUT_S)  # fmt: skip
        except CommandFailed as exc:
            detail = exc.detail.replace(spec.secret_key, "***").replace(spec.access_key, "***")
            raise DiskMountError(
                f"s3fs could not mount {spec.bucket}: {detail}"[:ERROR_BYTES]
            ) from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                passwd.unlink()
        # s3fs answers before it has spoken to the bucket; a first look makes sure it can.
        if (problem := await self._look(target)) is not None:
            await self._unmount_host(target)
            raise DiskMountError(f"the bucket does not answer: {problem}"[:ERROR_BYTES])

    async def unmount(self, sandbox_id: str, attachment_id: str, *, pid: int | None,
                      mount_path: str) -> None:  # fmt: skip
        if pid is not None:
            await run(sys.executable, "-S", nsmount.__file__, "remove", str(pid), mount_path,
                      check=False, timeout_s=MOUNT_TIMEOUT_S)  # fmt: skip
        await self._unmount_host(self.host_dir(sandbox_id, attachment_id))

    async def _unmount_host(self, target: Path) -> None:
        if await asyncio.to_thread(os.path.ismount, target):
            try:
                await run("umount", str(target))
            except CommandFailed:
                await run("umount", "-l", str(target), check=False)
        with contextlib.suppress(OSError):
            await asyncio.to_thread(target.rmdir)

    async def check(self, sandbox_id: str, attachment_id: str) -> str | None:
        target = self.host_dir(sandbox_id, attachment_id)
        if not await asyncio.to_thread(os.path.ismount, target):
            return "not mounted"
        return await self._look(target)

    @staticmethod
    async def _look(target: Path) -> str | None:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                await asyncio.to_thread(os.listdir, target)
        except TimeoutError:
            return f"no answer within {CHECK_TIMEOUT_S:g} s"
        except OSError as exc:
            return f"{exc.strerror or exc}"[:ERROR_BYTES]
        return None


class FakeDiskMounts(DiskMounts):
    """Bookkeeping only, for the fake driver."""

    def __init__(self) -> None:
        self.mounted: set[str] = set()

    async def mount(self, spec: BucketMount, *, pid: int) -> None:
        self.mounted.add(spec.attachment_id)

    async def unmount(self, sandbox_id: str, attachment_id: str, *, pid: int | None,
                      mount_path: str) -> None:  # fmt: skip
        self.mounted.discard(attachment_id)

    async def check(self, sandbox_id: str, attachment_id: str) -> str | None:
        return None if attachment_id in self.mounted else "not mounted"
