"""A deploy's upload, checked and unpacked in memory: base64 files, or a base64 zip.

Nothing is written anywhere until every path and size is known to be safe: paths must be
relative and stay inside the project (no ``..``, no absolute paths, no NUL), a zip may not
hold links or more than :data:`MAX_FILES` entries, and the unpacked size is capped twice,
by what the zip declares (so a bomb is refused before it is inflated) and by what really
comes out (declarations can lie).
"""

from __future__ import annotations

import base64
import binascii
import io
import lzma
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath

__all__ = ["MAX_FILES", "UploadError", "files_from_base64", "files_from_zip", "to_tar"]

MAX_FILES = 10_000
MAX_PATH = 1024


class UploadError(Exception):
    """The upload is refused; ``field`` is where in the request, the message says why."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


def _clean(path: str, *, field: str) -> str:
    if not path or len(path) > MAX_PATH or "\0" in path or "\\" in path:
        raise UploadError(f"{path[:80]!r} is not a usable file path", field=field)
    if path.startswith("/"):
        raise UploadError(
            f"{path[:80]!r} is absolute; paths are relative to the project", field=field
        )
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if not parts or any(part == ".." for part in parts):
        raise UploadError(f"{path[:80]!r} leaves the project (..)", field=field)
    return "/".join(parts)


def _b64(text: str, *, field: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise UploadError("content is not valid base64", field=field) from None


def files_from_base64(entries: Iterable[tuple[str, str]], *, max_bytes: int) -> dict[str, bytes]:
    """``(path, base64 content)`` pairs as path -> bytes."""
    files: dict[str, bytes] = {}
    total = 0
    for index, (path, content) in enumerate(entries):
        if index >= MAX_FILES:
            raise UploadError(f"more than {MAX_FILES} files", field="upload.files")
        field = f"upload.files.{index}"
        clean = _clean(path, field=f"{field}.path")
        if clean in files:
            raise UploadError(f"{clean!r} is given twice", field=f"{field}.path")
        data = _b64(content, field=f"{field}.content")
        total += len(data)
        if total > max_bytes:
            raise UploadError(
                f"the files add up to more than {max_bytes} bytes", field="upload.files"
            )
        files[clean] = data
    if not files:
        raise UploadError("the upload holds no files", field="upload.files")
    return files


def files_from_zip(content: str, *, max_bytes: int) -> dict[str, bytes]:
    """A base64 zip as path -> bytes, with one common top folder taken off (``my-app/…``)."""
    field = "upload.content"
    raw = _b64(content, field=field)
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
        infos = [info for info in archive.infolist() if not info.is_dir()]
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise UploadError(f"not a readable zip: {exc}", field=field) from None
    if len(infos) > MAX_FILES:
        raise UploadError(f"the zip holds more than {MAX_FILES} files", field=field)
    declared = sum(info.file_size for info in infos)
    if declared > max_bytes:
        raise UploadError(
            f"the zip would unpack to {declared} bytes, more than {max_bytes}; "
            "refused without unpacking",
            field=field,
        )
    files: dict[str, bytes] = {}
    total = 0
    for info in infos:
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UploadError(
                f"{info.filename[:80]!r} is a link; uploads hold plain files", field=field
            )
        path = _clean(info.filename, field=field)
        try:
            with archive.open(info) as member:
                data = member.read(info.file_size + 1)
        except (zipfile.BadZipFile, RuntimeError, OSError, EOFError, ValueError, zlib.error,
                lzma.LZMAError, NotImplementedError) as exc:  # fmt: skip
            raise UploadError(f"{path!r} cannot be unpacked: {exc}", field=field) from None
        total += len(data)
        if len(data) > info.file_size or total > max_bytes:
            raise UploadError(
                f"{path!r} unpacks to more than the zip declares; refused", field=field
            )
        files[path] = data
    if not files:
        raise UploadError("the zip holds no files", field=field)
    return _strip_common_folder(files)


def _strip_common_folder(files: dict[str, bytes]) -> dict[str, bytes]:
    tops = {PurePosixPath(path).parts[0] for path in files}
    if len(tops) != 1 or any("/" not in path for path in files):
        return files
    prefix = next(iter(tops)) + "/"
    return {path.removeprefix(prefix): data for path, data in files.items()}


def to_tar(files: Mapping[str, bytes]) -> bytes:
    """The files as one uncompressed tar (regular files, 0644; 0755 for scripts)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, data in sorted(files.items()):
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o755 if data.startswith(b"#!") else 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
