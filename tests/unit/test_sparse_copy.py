"""The in-process copy of a disk template: the same bytes, and its holes stay holes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hutch.host.storage import sparse_copy

MIB = 1024 * 1024


def test_a_sparse_file_is_copied_byte_for_byte_without_filling_its_holes(tmp_path: Path) -> None:
    source = tmp_path / "template.img"
    with open(source, "wb") as out:
        out.write(b"head" * 1024)
        out.seek(64 * MIB)
        out.write(os.urandom(3 * MIB))
        out.truncate(512 * MIB)  # a hole at the end too
    target = tmp_path / "disk.img"
    sparse_copy(source, target)
    assert target.stat().st_size == source.stat().st_size
    with open(source, "rb") as a, open(target, "rb") as b:
        while chunk := a.read(8 * MIB):
            assert b.read(8 * MIB) == chunk
    assert target.stat().st_blocks * 512 < 16 * MIB  # the holes were not written


def test_an_existing_target_is_refused_and_kept(tmp_path: Path) -> None:
    source, target = tmp_path / "a", tmp_path / "b"
    source.write_bytes(b"new")
    target.write_bytes(b"someone's disk")
    with pytest.raises(FileExistsError):
        sparse_copy(source, target)
    assert target.read_bytes() == b"someone's disk"
