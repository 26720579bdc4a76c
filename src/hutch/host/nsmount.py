"""Put a host directory's mount into a running sandbox at a path, or take it out again.

Run as its own process (``python3 -S nsmount.py place PID SOURCE TARGET`` or
``remove PID TARGET``): entering a mount namespace needs a single-threaded caller. It
clones the host mount with ``open_tree`` before entering the sandbox's mount namespace,
then ``move_mount``s the clone onto the target there, so nothing of the sandbox's own
files is ever executed with the host's privileges (no ``mount`` binary from inside), and
every path inside is resolved under the sandbox's root.
"""

from __future__ import annotations

import ctypes
import os
import sys

SYS_OPEN_TREE = 428  # x86_64 and aarch64 share these numbers
SYS_MOVE_MOUNT = 429
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
AT_RECURSIVE = 0x8000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
AT_FDCWD = -100
CLONE_NEWNS = 0x00020000
MNT_DETACH = 2

libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")
    return result


def _enter(pid: int) -> None:
    fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(libc.setns(fd, CLONE_NEWNS), "setns")
    finally:
        os.close(fd)
    os.chdir("/")


def place(pid: int, source: str, target: str) -> None:
    tree = _check(
        libc.syscall(SYS_OPEN_TREE, AT_FDCWD, source.encode(),
                     OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE),
        "open_tree",
    )  # fmt: skip
    _enter(pid)
    os.makedirs(target, exist_ok=True)
    _check(
        libc.syscall(SYS_MOVE_MOUNT, tree, b"", AT_FDCWD, target.encode(),
                     MOVE_MOUNT_F_EMPTY_PATH),
        "move_mount",
    )  # fmt: skip


def remove(pid: int, target: str) -> None:
    _enter(pid)
    _check(libc.umount2(target.encode(), MNT_DETACH), "umount")


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["place"] and len(argv) == 4:
            place(int(argv[1]), argv[2], argv[3])
        elif argv[:1] == ["remove"] and len(argv) == 3:
            remove(int(argv[1]), argv[2])
        else:
            print("usage: nsmount.py place PID SOURCE TARGET | remove PID TARGET", file=sys.stderr)
            return 2
    except (OSError, ValueError) as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
