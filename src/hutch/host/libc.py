"""The C library, loaded once per process for the system calls hutch makes itself
(mount, unshare, setns, sethostname, umount2).

``ctypes.util.find_library`` starts ``ldconfig -p`` (a process, ~5 ms and more on a busy
host) at every call; a create made three or four such calls. The library is glibc's
``libc.so.6`` on every Linux hutch runs on, and one handle serves every thread (``errno``
is kept per thread with ``use_errno``).
"""

from __future__ import annotations

import ctypes
import functools

__all__ = ["libc"]


@functools.cache
def libc() -> ctypes.CDLL:
    return ctypes.CDLL("libc.so.6", use_errno=True)
