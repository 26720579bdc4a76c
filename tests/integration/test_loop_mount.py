"""hutch.host.loop: a btrfs image mounted through a loop device without the mount command,
and let go of once unmounted (no loop device left tied to it)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hutch.host.loop import loop_mount
from hutch.host.proc import CommandFailed


def tied_to(image: Path) -> list[str]:
    shown = subprocess.run(["losetup", "--list", "--noheadings", "-O", "NAME,BACK-FILE"],
                           capture_output=True, text=True, check=True).stdout  # fmt: skip
    return [line.split()[0] for line in shown.splitlines() if str(image) in line]


def test_a_btrfs_image_mounts_keeps_its_files_and_frees_its_loop_device(tmp_path: Path) -> None:
    image, point = tmp_path / "disk.img", tmp_path / "layer"
    subprocess.run(["truncate", "-s", "128M", str(image)], check=True)
    subprocess.run(["mkfs.btrfs", "-q", "-f", "--mixed", str(image)], check=True)
    point.mkdir()
    try:
        device = loop_mount(image, point, "btrfs")
        assert tied_to(image) == [device]
        shown = subprocess.run(["findmnt", "-n", "-o", "OPTIONS", "-T", str(point)],
                               capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert "noatime" in shown.split(",")
        (point / "kept").write_text("kept\n")
        subprocess.run(["umount", str(point)], check=True)
        assert tied_to(image) == []  # autoclear: the device let go with the unmount
        loop_mount(image, point, "btrfs")
        assert (point / "kept").read_text() == "kept\n"
    finally:
        subprocess.run(["umount", str(point)], check=False, capture_output=True)
    assert tied_to(image) == []


def test_an_image_that_is_not_the_filesystem_named_fails_and_leaves_no_device(
    tmp_path: Path,
) -> None:
    image, point = tmp_path / "junk.img", tmp_path / "layer"
    subprocess.run(["truncate", "-s", "16M", str(image)], check=True)
    point.mkdir()
    with pytest.raises(CommandFailed) as failed:
        loop_mount(image, point, "btrfs")
    assert "mount" in str(failed.value)
    assert tied_to(image) == []
