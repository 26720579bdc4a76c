from pathlib import Path

from hutch.host.images import COMPLETE_MARKER, built_images, image_dir
from hutch.host.machine import read_memory


def test_meminfo_is_read_in_mib(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(
        "MemTotal:       24576000 kB\nMemFree:         1024000 kB\nMemAvailable:   20480000 kB\n"
    )
    memory = read_memory(meminfo)
    assert (memory.total_mib, memory.available_mib) == (24000, 20000)


def test_real_meminfo_is_sane() -> None:
    memory = read_memory()
    assert 0 < memory.available_mib <= memory.total_mib


def test_only_completed_images_count_as_built(tmp_path: Path) -> None:
    assert built_images(tmp_path) == []
    build = image_dir(tmp_path, "node") / "abc"
    build.mkdir(parents=True)
    (image_dir(tmp_path, "node") / "current").symlink_to("abc")
    assert built_images(tmp_path) == []
    (build / COMPLETE_MARKER).write_text("")
    assert built_images(tmp_path) == ["node"]
    assert image_dir(tmp_path, "devbox:1").name == "devbox_1"
