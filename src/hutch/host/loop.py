"""Mount a filesystem image through a loop device, in this process: what ``mount -o
loop,noatime IMAGE POINT`` does, without starting ``mount`` (a process, and libmount
reading the host's whole mount table: 40-100 ms on a busy host against 4-30 ms here).

A free loop device is asked of ``/dev/loop-control``, tied to the image with
``LOOP_CONFIGURE`` (Linux 5.8) with autoclear set, as ``mount -o loop`` does: the device
lets go of the image by itself once the filesystem is unmounted. A device another process
took between the two steps is skipped. Where ``LOOP_CONFIGURE`` is missing the caller
falls back to the ``mount`` command (:func:`loop_mount` raises :class:`LoopUnsupported`).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct
from pathlib import Path

from hutch.host.libc import libc as c_library
from hutch.host.proc import CommandFailed, CommandResult

__all__ = ["LoopUnsupported", "loop_mount"]

_LOOP_CTL_GET_FREE = 0x4C82
_LOOP_CONFIGURE = 0x4C0A
_LO_FLAGS_AUTOCLEAR = 4
_MS_NOATIME = 1024
# struct loop_info64 (232 bytes), in struct loop_config after the fd and the block size,
# before 64 reserved bytes.
_INFO64 = "=QQQQQIIII64s64s32sQQ"


class LoopUnsupported(Exception):
    """This kernel has no ``LOOP_CONFIGURE``: use ``mount -o loop``."""


def loop_mount(image: Path, point: Path, fstype: str) -> str:
    """Mount ``image`` (a filesystem of type ``fstype``) at ``point`` with ``noatime``
    through a free loop device; return the device. Raises :class:`CommandFailed` (as the
    ``mount`` command failing would), :class:`LoopUnsupported`. Blocking: call from a
    thread."""
    device, fd = _attach(image)
    try:
        libc = c_library()
        if libc.mount(device.encode(), str(point).encode(), fstype.encode(), _MS_NOATIME, None):
            err = ctypes.get_errno()
            raise _failed(image, point, f"mount: {os.strerror(err)}")
    finally:
        os.close(fd)  # mounted: the filesystem holds the device; else it lets go (autoclear)
    return device


def _attach(image: Path) -> tuple[str, int]:
    """A free loop device tied to ``image`` (autoclear): its name and an open descriptor."""
    try:
        control = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise LoopUnsupported(f"/dev/loop-control: {exc}") from exc
    try:
        backing = os.open(image, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        os.close(control)
        raise _failed(image, image, f"cannot open the image: {exc}") from exc
    try:
        info = struct.pack(_INFO64, 0, 0, 0, 0, 0, 0, 0, 0, _LO_FLAGS_AUTOCLEAR,
                           os.fsencode(str(image))[-63:], b"", b"", 0, 0)  # fmt: skip
        config = struct.pack("=II", backing, 0) + info + bytes(64)
        for _ in range(64):
            number = fcntl.ioctl(control, _LOOP_CTL_GET_FREE)
            device = f"/dev/loop{number}"
            try:
                fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError as exc:  # no device nodes made for us
                raise LoopUnsupported(f"{device}: {exc}") from exc
            try:
                fcntl.ioctl(fd, _LOOP_CONFIGURE, config)
                return device, fd
            except OSError as exc:
                os.close(fd)
                if exc.errno == errno.EBUSY:
                    continue  # taken by another process meanwhile: ask again
                if exc.errno in (errno.ENOTTY, errno.EINVAL):
                    raise LoopUnsupported(f"LOOP_CONFIGURE: {exc}") from exc
                raise _failed(image, image, f"cannot set up a loop device: {exc}") from exc
        raise _failed(image, image, "no free loop device")
    finally:
        os.close(backing)
        os.close(control)


def _failed(image: Path, point: Path, detail: str) -> CommandFailed:
    argv = ("mount", "-o", "loop,noatime", str(image), str(point))
    return CommandFailed(argv, CommandResult(32, b"", detail.encode()))
