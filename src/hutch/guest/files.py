"""The guest agent's file operations, ``put`` and ``get``, streamed in frames."""

from __future__ import annotations

import os
import stat
import threading

from .wire import CHUNK, DATA, END, Connection, ProtocolError, suppress

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .agent import Agent


def put(agent: Agent, conn: Connection, request: dict[str, Any]) -> None:
    """The ``put`` op: data frames into a temp file beside ``path``, renamed over it at the
    end, so a failed upload leaves the old file."""
    path = agent.resolve(request.get("path"))
    mode = request.get("mode", 0o644)
    if not isinstance(mode, int) or not 0 <= mode <= 0o7777:
        raise ValueError("mode must be a permission number")
    if os.path.isdir(path):
        conn.send_error("is_directory", f"{request['path']} is a directory")
        return
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        conn.send_error("invalid", f"a parent of {request['path']} is not a directory")
        return
    except OSError as exc:
        conn.send_error("io", f"cannot create {directory}: {exc.strerror}")
        return
    temp = os.path.join(
        directory, f".{os.path.basename(path)}.hutch-{os.getpid()}-{threading.get_ident()}"
    )
    size = 0
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    except OSError as exc:
        conn.send_error("io", f"cannot write {request['path']}: {exc.strerror}")
        return
    complete = False
    try:
        with os.fdopen(fd, "wb", buffering=0) as out:
            while True:
                frame = conn.recv()
                if frame is None:
                    return  # the upload was cut off: keep the old file
                kind, payload = frame
                if kind == END:
                    break
                if kind != DATA:
                    raise ProtocolError("expected data frames")
                view = memoryview(payload)
                while view:
                    written = out.write(view)
                    view = view[written:]
                size += len(payload)
        os.chmod(temp, mode)
        os.replace(temp, path)
        complete = True
    except OSError as exc:
        conn.send_error("io", f"cannot write {request['path']}: {exc.strerror}")
        return
    finally:
        if not complete:
            with suppress(OSError):
                os.unlink(temp)
    conn.send_json({"ok": True, "size": size})


def get(agent: Agent, conn: Connection, request: dict[str, Any]) -> None:
    """The ``get`` op: a JSON header with the size, then data frames, then Z."""
    path = agent.resolve(request.get("path"))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        conn.send_error("not_found", f"{request['path']} does not exist")
        return
    except IsADirectoryError:
        conn.send_error("is_directory", f"{request['path']} is a directory")
        return
    except OSError as exc:
        conn.send_error("io", f"cannot read {request['path']}: {exc.strerror}")
        return
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        kind = "is_directory" if stat.S_ISDIR(info.st_mode) else "invalid"
        conn.send_error(kind, f"{request['path']} is not a regular file")
        return
    with os.fdopen(fd, "rb", buffering=0) as source:
        conn.send_json({"ok": True, "size": info.st_size})
        while True:
            chunk = source.read(CHUNK * 4)
            if not chunk:
                break
            conn.send(DATA, chunk)
    conn.send(END)
