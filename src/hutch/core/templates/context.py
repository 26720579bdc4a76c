"""The build context: the files a Dockerfile's COPY and ADD take, uploaded as a tar (plain
or compressed) or zip archive, base64 in the request.

The archive is read here, on the host, only as data: nothing of it is ever written to
the host's filesystem. A COPY step becomes a new tar of exactly the files it copies, at
their destination paths, which the build unpacks inside the step's sandbox.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import io
import posixpath
import stat
import tarfile
import zipfile
from dataclasses import dataclass

from hutch.core.errors import InvalidInput, PayloadTooLarge
from hutch.core.templates.dockerfile import BuildStep

__all__ = ["BuildContext", "CopyPayload", "decode_context"]

_GLOB = set("*?[")


@dataclass(frozen=True, kw_only=True)
class Entry:
    kind: str  # "file", "dir" or "symlink"
    mode: int
    data: bytes = b""
    target: str = ""
    mtime: float = 0.0


@dataclass(frozen=True, kw_only=True)
class CopyPayload:
    """What one COPY or ADD puts into the image."""

    archive: bytes
    """A tar of the copied files at their destination paths (relative to /)."""
    digest: str
    """sha256 of every copied path, kind, mode and content: part of the step's cache key."""
    paths: tuple[str, ...]
    """Every path written, absolute (for --chown)."""


def decode_context(encoded: str, *, max_bytes: int) -> bytes:
    """The archive from its base64. Raises InvalidInput (not base64) or PayloadTooLarge."""
    if len(encoded) > (max_bytes + 2) // 3 * 4 + 4:
        raise PayloadTooLarge(
            f"the build context is over {max_bytes} bytes (HUTCH_TEMPLATE_MAX_CONTEXT_BYTES)",
            field="context",
        )
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("context is not valid base64", field="context") from None
    if len(raw) > max_bytes:
        raise PayloadTooLarge(
            f"the build context is {len(raw)} bytes, over {max_bytes} "
            "(HUTCH_TEMPLATE_MAX_CONTEXT_BYTES)",
            field="context",
        )
    return raw


class BuildContext:
    """The files of an uploaded context, by path relative to its root."""

    def __init__(self, entries: dict[str, Entry]) -> None:
        self.entries = entries
        self.dirs = {""}
        for path, entry in entries.items():
            parts = path.split("/")
            for depth in range(1, len(parts)):
                self.dirs.add("/".join(parts[:depth]))
            if entry.kind == "dir":
                self.dirs.add(path)

    @classmethod
    def empty(cls) -> BuildContext:
        return cls({})

    @classmethod
    def load(cls, raw: bytes, *, max_unpacked: int) -> BuildContext:
        """Read a tar (plain, gz, bz2, xz) or zip archive. Raises InvalidInput on an archive
        that does not read or a path outside the context, PayloadTooLarge past
        ``max_unpacked`` bytes of content."""
        if raw[:4] == b"PK\x03\x04" or raw[:4] == b"PK\x05\x06":
            return cls(_read_zip(raw, max_unpacked))
        return cls(_read_tar(raw, max_unpacked))

    def payload(self, step: BuildStep) -> CopyPayload:
        """The files ``step`` copies. Raises ValueError naming a source not in the context."""
        out: dict[str, Entry] = {}
        directory = step.dest.endswith("/")
        dest = step.dest.rstrip("/") or "/"
        for pattern in step.sources:
            matches = self._match(pattern)
            if not matches:
                raise ValueError(f"{pattern!r} is not in the build context")
            for match in matches:
                if match in self.dirs:
                    for path, entry in self.entries.items():
                        if match == "" or path.startswith(match + "/"):
                            relative = path[len(match) + 1 :] if match else path
                            out[posixpath.join(dest, relative)] = entry
                    continue
                entry = self.entries[match]
                if step.extract and entry.kind == "file" and _is_tar(entry.data):
                    for path, member in _read_tar(entry.data, max(len(entry.data) * 64, 1)).items():
                        out[posixpath.join(dest, path)] = member
                    continue
                name = posixpath.join(dest, posixpath.basename(match)) if directory else dest
                out[name] = entry
        return _pack(out, chmod=step.chmod)

    def _match(self, pattern: str) -> list[str]:
        clean = posixpath.normpath("/" + pattern).lstrip("/")
        if clean in ("", "."):
            return [""]
        if not _GLOB & set(clean):
            return [clean] if clean in self.entries or clean in self.dirs else []
        wanted = clean.split("/")
        found = []
        for path in sorted(set(self.entries) | (self.dirs - {""})):
            parts = path.split("/")
            if len(parts) == len(wanted) and all(
                fnmatch.fnmatchcase(part, glob) for part, glob in zip(parts, wanted, strict=True)
            ):
                found.append(path)
        return found


def _safe_name(name: str) -> str:
    clean = name.replace("\\", "/").lstrip("/")
    while clean.startswith("./"):
        clean = clean[2:]
    clean = clean.rstrip("/")
    if any(part == ".." for part in clean.split("/")) or "\0" in clean:
        raise InvalidInput(f"the build context has a path outside it: {name!r}", field="context")
    return posixpath.normpath(clean) if clean else ""


def _read_tar(raw: bytes, max_unpacked: int) -> dict[str, Entry]:
    entries: dict[str, Entry] = {}
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:*") as archive:
            for member in archive:
                name = _safe_name(member.name)
                if not name:
                    continue
                mode = member.mode & 0o7777
                if member.isdir():
                    entries[name] = Entry(kind="dir", mode=mode, mtime=member.mtime)
                elif member.issym():
                    entries[name] = Entry(kind="symlink", mode=0o777, target=member.linkname)
                elif member.islnk():
                    linked = entries.get(_safe_name(member.linkname))
                    if linked is None:
                        raise InvalidInput(
                            f"hard link {member.name!r} to a file not before it", field="context"
                        )
                    entries[name] = linked
                elif member.isfile():
                    total += member.size
                    if total > max_unpacked:
                        raise _too_large(max_unpacked)
                    handle = archive.extractfile(member)
                    data = handle.read() if handle is not None else b""
                    entries[name] = Entry(kind="file", mode=mode, data=data, mtime=member.mtime)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InvalidInput(
            f"context is neither a tar nor a zip archive ({exc})", field="context"
        ) from None
    return entries


def _read_zip(raw: bytes, max_unpacked: int) -> dict[str, Entry]:
    entries: dict[str, Entry] = {}
    total = 0
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            for info in archive.infolist():
                name = _safe_name(info.filename)
                if not name:
                    continue
                unix = info.external_attr >> 16
                if info.is_dir():
                    entries[name] = Entry(kind="dir", mode=(unix & 0o7777) or 0o755)
                    continue
                total += info.file_size
                if total > max_unpacked:
                    raise _too_large(max_unpacked)
                data = archive.read(info)
                if stat.S_ISLNK(unix):
                    entries[name] = Entry(kind="symlink", mode=0o777, target=data.decode())
                else:
                    entries[name] = Entry(kind="file", mode=(unix & 0o7777) or 0o644, data=data)
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError, EOFError) as exc:
        raise InvalidInput(
            f"context is not a readable zip archive ({exc})", field="context"
        ) from None
    return entries


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the build context unpacks to more than {limit} bytes (HUTCH_TEMPLATE_MAX_CONTEXT_BYTES)",
        field="context",
    )


def _is_tar(data: bytes) -> bool:
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
            return archive.next() is not None
    except (tarfile.TarError, EOFError, OSError):
        return False


def _pack(files: dict[str, Entry], *, chmod: int | None) -> CopyPayload:
    digest = hashlib.sha256()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for path in sorted(files):
            entry = files[path]
            info = tarfile.TarInfo(path.lstrip("/"))
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = entry.mtime
            mode = entry.mode if chmod is None or entry.kind == "symlink" else chmod
            info.mode = mode
            if entry.kind == "dir":
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            elif entry.kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = entry.target
                archive.addfile(info)
            else:
                info.size = len(entry.data)
                archive.addfile(info, io.BytesIO(entry.data))
            content = hashlib.sha256(entry.data).hexdigest() if entry.kind == "file" else ""
            digest.update(f"{path}\0{entry.kind}\0{mode:o}\0{entry.target}\0{content}\n".encode())
    return CopyPayload(
        archive=buffer.getvalue(), digest=digest.hexdigest(), paths=tuple(sorted(files))
    )
