"""A Python for the guest agent in images that have none of their own.

The guest agent (a sandbox's init) is standard-library Python and runs on the image's own
``/usr/bin/python3``. Most registry images have none there (``node``, ``alpine``,
distroless, and ``python:*``, whose Python is in ``/usr/local``). For those, the host's
own Python 3 (Debian's, which hutch needs anyway) is copied once into a self-contained
directory, ``$HUTCH_HOME/guest-runtime/<key>/``: the interpreter, its standard library
(less tests, IDLE, tkinter and site-packages) and every shared library it and its
extension modules load, with the dynamic loader. It is bind-mounted read-only into such
sandboxes at ``/.hutch/runtime`` and started through that loader with
``--library-path``, so nothing of it depends on the image's C library and nothing
(``LD_LIBRARY_PATH``, ``PYTHONHOME``) leaks into the programs the agent starts.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["RUNTIME_MOUNT", "build_runtime", "has_python", "runtime_argv"]

RUNTIME_MOUNT = "/.hutch/runtime"
IMAGE_PYTHON = "usr/bin/python3"
_BUILDER_VERSION = 1
_COMPLETE = ".complete"
_SKIPPED = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3",
            "site-packages", "dist-packages", "config-3.11-x86_64-linux-gnu"}  # fmt: skip
_LDD_PATH = re.compile(r"=>\s*(/\S+)|^\s*(/\S+)\s*\(")


def host_python() -> Path:
    """The host's Debian Python the runtime is made from."""
    for candidate in ("/usr/bin/python3", shutil.which("python3") or ""):
        if candidate and os.path.exists(candidate):
            return Path(os.path.realpath(candidate))
    raise FileNotFoundError("no python3 on this host (Debian package python3)")


def has_python(rootfs: Path, relative: str = IMAGE_PYTHON, hops: int = 16) -> bool:
    """Whether ``/relative`` exists inside ``rootfs``, following symbolic links as they
    resolve inside it (an absolute target is under ``rootfs``, not the host's)."""
    path = rootfs / relative
    for _ in range(hops):
        if not os.path.lexists(path):
            return False
        if not path.is_symlink():
            return True
        target = os.readlink(path)
        path = rootfs / target.lstrip("/") if target.startswith("/") else path.parent / target
        resolved = Path(os.path.normpath(path))
        if not resolved.is_relative_to(rootfs):
            return False
        path = resolved
    return False


def runtime_argv(loader: str) -> list[str]:
    """The argv prefix that starts the runtime's Python inside a sandbox."""
    return [f"{RUNTIME_MOUNT}/lib/{loader}", "--library-path", f"{RUNTIME_MOUNT}/lib",
            f"{RUNTIME_MOUNT}/bin/python3"]  # fmt: skip


def build_runtime(home: Path) -> tuple[Path, str]:
    """Make (once) the runtime directory from the host's Python; return it and the name
    of its dynamic loader. Idempotent and safe against concurrent callers (built in a
    private directory, renamed into place)."""
    python = host_python()
    st = python.stat()
    key = hashlib.sha256(
        f"{python}\0{st.st_size}\0{st.st_mtime_ns}\0{_BUILDER_VERSION}".encode()
    ).hexdigest()[:16]
    target = home / "guest-runtime" / key
    if (target / _COMPLETE).is_file():
        return target, (target / _COMPLETE).read_text().strip()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.parent / f".{key}.{os.getpid()}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        loader = _assemble(python, partial)
        (partial / _COMPLETE).write_text(loader + "\n")
        try:
            partial.rename(target)
        except OSError:
            if not (target / _COMPLETE).is_file():
                raise  # not another process's finished copy: a real failure
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target, (target / _COMPLETE).read_text().strip()


def _assemble(python: Path, root: Path) -> str:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    stdlib = Path(f"/usr/lib/{version}")
    if not (stdlib / "os.py").is_file():
        probe = subprocess.run([str(python), "-S", "-c", "import os; print(os.__file__)"],
                               capture_output=True, text=True, check=True)  # fmt: skip
        stdlib = Path(probe.stdout.strip()).parent
        version = stdlib.name
    (root / "bin").mkdir(parents=True)
    lib = root / "lib"
    lib.mkdir()
    shutil.copy2(python, root / "bin" / "python3")
    shutil.copytree(stdlib, lib / version, symlinks=True,
                    ignore=lambda _, names: [n for n in names if n in _SKIPPED])  # fmt: skip
    objects = [python, *sorted((lib / version / "lib-dynload").glob("*.so"))]
    loader = ""
    for shared in _shared_libraries(objects):
        if "ld-linux" in shared.name or shared.name.startswith("ld64"):
            loader = shared.name
        with contextlib.suppress(FileExistsError):
            shutil.copy2(os.path.realpath(shared), lib / shared.name)
    if not loader:
        raise FileNotFoundError(f"no dynamic loader found for {python}")
    return loader


def _shared_libraries(objects: list[Path]) -> list[Path]:
    """Every shared library (and the loader) that ``objects`` load, from ``ldd``."""
    found: dict[str, Path] = {}
    for path in objects:
        result = subprocess.run(["ldd", str(path)], capture_output=True, text=True, check=False)
        for line in result.stdout.splitlines():
            match = _LDD_PATH.search(line)
            if match:
                library = Path(match.group(1) or match.group(2))
                found.setdefault(library.name, library)
    return list(found.values())
