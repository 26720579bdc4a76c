"""What a drain's move leaves on a host when the agent is killed in the middle of it (its
``finally`` never runs): the archives beside the sandboxes' directories, each the size of
a disk's data, are removed at the agent's next start; nothing else there is touched."""

from __future__ import annotations

from pathlib import Path

from hutch.cluster.drain import sweep_partial_moves
from hutch.settings import Settings


def test_archives_of_a_move_cut_by_a_kill_are_removed_at_the_next_start(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", images_dir=tmp_path / "images")
    sandboxes = settings.home / "sandboxes"
    kept = sandboxes / "sb_kept"  # a sandbox of this host, and its own files
    kept.mkdir(parents=True)
    (kept / "disk.img").write_bytes(b"disk")
    (kept / ".moving.tar").write_bytes(b"its own")
    other = sandboxes / ".not-a-move"  # anything else hidden there is not the sweep's
    other.write_text("x")
    # The draining host's upload, cut; the taking host's download and its unpacking, cut.
    upload = sandboxes / ".sb_gone.moving.tar"
    download = sandboxes / ".sb_in.adopting.tar"
    unpacking = sandboxes / ".sb_in.adopting"
    upload.write_bytes(b"\0" * 4096)
    download.write_bytes(b"\0" * 4096)
    unpacking.mkdir()
    (unpacking / "disk.img").write_bytes(b"half")

    removed = sweep_partial_moves(settings)

    assert sorted(removed) == sorted([upload, download, unpacking])
    assert not upload.exists() and not download.exists() and not unpacking.exists()
    assert (kept / "disk.img").read_bytes() == b"disk"
    assert (kept / ".moving.tar").exists() and other.exists()
    assert sweep_partial_moves(settings) == []


def test_a_host_without_sandboxes_sweeps_nothing(tmp_path: Path) -> None:
    assert sweep_partial_moves(Settings(home=tmp_path / "none")) == []
