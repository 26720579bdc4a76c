"""Imported images and snapshots: host disk per sandbox, and how long a snapshot freezes.

    .venv/bin/python bench/images.py [--count 100] [--out bench/results/images.json]

1. An OCI image (devbox:1's files plus a layer) is pushed to a real registry on loopback
   (Debian's docker-registry) and imported (skopeo + umoci); then ``--count`` runc
   sandboxes are started from it, and the host's used disk (statvfs of the filesystem
   holding the images and the sandboxes) is read before and after: the image counts once,
   each sandbox adds its writable layer. Peer in the same run: the same count from the
   catalog's ``devbox:1``, and what a copy of the image per sandbox would take.
   The same count from a template (a 60 MiB layer over devbox:1, made as a snapshot is).
2. Snapshots of a running sandbox whose writable layer holds nothing, 1,000 small files,
   10,000 small files, and one 256 MiB file, as the route takes them (capture_layer, then
   the layer store's commit): how long its processes were frozen, the whole snapshot, the
   template layer's disk. Peer: a plain ``cp -a`` of the same layer (what the freeze would
   cost if the layer were copied while frozen); and the flattened alternative
   (``Driver.snapshot``: the image merged with hard links).

It drives the runc driver directly (no API server: the template routes come with their
own issue), destroys everything it made and prints one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.registry import OciRegistry, derive_image, devbox_layout  # noqa: E402

from hutch.core.ids import new_id  # noqa: E402
from hutch.host.addresses import LinkPool  # noqa: E402
from hutch.host.drivers.base import SandboxSpec  # noqa: E402
from hutch.host.drivers.runc import RuncDriver  # noqa: E402
from hutch.host.guest import ExecExit, ExecRequest  # noqa: E402
from hutch.host.images import image_dir, image_rootfs  # noqa: E402
from hutch.host.layers import LayerStore, StartSettings, write_image  # noqa: E402
from hutch.host.machine import read_memory  # noqa: E402
from hutch.host.oci_import import import_image  # noqa: E402
from hutch.settings import Settings  # noqa: E402

IMAGES = Path(os.environ.get("HUTCH_IMAGES_DIR", "/var/cache/hutch-test-images"))
MIB = 2**20


def used_bytes(path: Path) -> int:
    os.sync()
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def du_bytes(path: Path) -> int:
    out = subprocess.run(["du", "-sB1", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def du_beyond(base: Path, path: Path) -> int:
    """What ``path`` takes beyond ``base``: files hard-linked to ``base`` count once."""
    out = subprocess.run(["du", "-sB1", str(base), str(path)], capture_output=True, text=True,
                         check=True)  # fmt: skip
    return int(out.stdout.splitlines()[1].split()[0])


async def sh(driver: RuncDriver, sandbox_id: str, script: str) -> None:
    request = ExecRequest(argv=["/bin/sh", "-c", script])
    async for event in driver.guest(sandbox_id).exec(request):
        if isinstance(event, ExecExit):
            assert event.exit_code == 0, (script, event)


class Sandboxes:
    def __init__(self, driver: RuncDriver, pool: LinkPool) -> None:
        self.driver = driver
        self.pool = pool
        self.ids: list[str] = []

    async def start(self, rootfs: str, count: int, concurrency: int = 4) -> float:
        gate = asyncio.Semaphore(concurrency)

        async def one() -> None:
            sandbox_id = new_id("sb_")
            link = self.pool.allocate(sandbox_id)
            spec = SandboxSpec(id=sandbox_id, hostname="bench", rootfs=rootfs, vcpu=1,
                               mem_mib=256, disk_mib=1024, link=link)  # fmt: skip
            async with gate:
                await self.driver.create(spec)
            self.ids.append(sandbox_id)

        started = time.monotonic()
        await asyncio.gather(*(one() for _ in range(count)))
        return time.monotonic() - started

    async def destroy_all(self) -> None:
        for sandbox_id in self.ids:
            await self.driver.destroy(sandbox_id)
            self.pool.release(sandbox_id)
        self.ids.clear()


async def disk_per_sandbox(
    sandboxes: Sandboxes, rootfs: str, count: int, root: Path, image_bytes: int
) -> dict[str, Any]:
    before = used_bytes(root)
    seconds = await sandboxes.start(rootfs, count)
    # Each sandbox as used: a first exec has run in it (its layer holds /workspace).
    await asyncio.gather(*(sh(sandboxes.driver, i, "true") for i in sandboxes.ids))
    after = used_bytes(root)
    layers = sum(
        os.stat(sandboxes.driver.sandboxes / i / "disk.img").st_blocks * 512 for i in sandboxes.ids
    )
    await sandboxes.destroy_all()
    return {
        "sandboxes": count,
        "start_seconds": round(seconds, 1),
        "image_mib_counted_once": round(image_bytes / MIB, 1),
        "writable_layers_allocated_mib_per_sandbox": round(layers / MIB / count, 2),
        "host_disk_mib_per_sandbox_image_included": round((image_bytes + layers) / MIB / count, 2),
        # Noisy on a shared disk (other writers); a cross-check, not the figure.
        "statvfs_used_delta_mib": round((after - before) / MIB, 1),
    }


LAYERS = {
    "empty": "true",
    "1000_small_files": "mkdir -p /root/f && cd /root/f && "
    "for i in $(seq 1000); do echo $i > f$i; done",
    "10000_small_files": "mkdir -p /root/g && cd /root/g && "
    "for i in $(seq 10000); do echo $i > g$i; done",
    "256_mib_file": "head -c 268435456 /dev/urandom > /root/big",
}


async def snapshots(
    driver: RuncDriver, pool: LinkPool, images: Path, layers: LayerStore
) -> dict[str, Any]:
    """What the snapshot route does (capture_layer, then LayerStore.commit), per layer."""
    out: dict[str, Any] = {}
    sandboxes = Sandboxes(driver, pool)
    for name, script in LAYERS.items():
        await sandboxes.start("devbox:1", 1)
        sandbox_id = sandboxes.ids[0]
        await sh(driver, sandbox_id, script + "; sync")
        upper = driver.sandboxes / sandbox_id / "layer" / "upper"
        plain = Path(tempfile.mkdtemp(prefix="hutch-bench-cp-", dir=images))
        started = time.monotonic()
        await asyncio.to_thread(
            subprocess.run, ["cp", "-a", str(upper), str(plain / "upper")], check=True
        )
        plain_ms = (time.monotonic() - started) * 1000
        shutil.rmtree(plain)
        started = time.monotonic()
        async with driver.capture_layer(sandbox_id) as captured:
            committed_at = time.monotonic()
            await layers.commit(f"bench-{name}", captured.upper, exclude=("run/self",))
            commit_ms = (time.monotonic() - committed_at) * 1000
        total_ms = (time.monotonic() - started) * 1000
        # The flattened alternative (Driver.snapshot: the image merged, hard links).
        build = image_dir(images, f"bench-snap:{name}") / "v1"
        merged = await driver.snapshot(sandbox_id, build)
        base = image_rootfs(images, "devbox:1")
        assert base is not None
        out[name] = {
            "frozen_ms": round(captured.frozen_ms, 1),
            "snapshot_total_ms": round(total_ms),
            "commit_ms": round(commit_ms),
            "layer_bytes_mib": round(du_bytes(upper) / MIB, 1),
            "template_layer_disk_mib": round(du_bytes(layers.path(f"bench-{name}")) / MIB, 1),
            "peer_plain_cp_of_the_layer_ms": round(plain_ms, 1),
            "flattened_image_total_ms": round(merged.total_ms),
            "flattened_image_disk_beyond_its_base_mib": round(du_beyond(base, build) / MIB, 1),
        }
        shutil.rmtree(build.parent)
        await sandboxes.destroy_all()
    return out


async def template_disk(
    driver: RuncDriver, pool: LinkPool, images: Path, layers: LayerStore, count: int, root: Path
) -> dict[str, Any]:
    """``count`` sandboxes from one template (a 60 MiB layer over devbox:1, written like a
    snapshot's): the template is on disk once."""
    maker = Sandboxes(driver, pool)
    await maker.start("devbox:1", 1)
    await sh(driver, maker.ids[0], "cp -a /usr/lib/python3.11 /opt/deps && "
             "head -c 20971520 /dev/urandom > /opt/deps/blob && sync")  # fmt: skip
    async with driver.capture_layer(maker.ids[0]) as captured:
        await layers.commit("bench-template", captured.upper, exclude=("run/self",))
    await maker.destroy_all()
    write_image(driver.home, "bench-template", images=images, root="devbox:1",
                layers=[layers.path("bench-template")], config=StartSettings())  # fmt: skip
    base = image_rootfs(images, "devbox:1")
    assert base is not None
    image_bytes = du_bytes(base) + du_bytes(layers.path("bench-template"))
    result = await disk_per_sandbox(Sandboxes(driver, pool), "bench-template", count, root,
                                    image_bytes)  # fmt: skip
    result["template_layer_mib"] = round(du_bytes(layers.path("bench-template")) / MIB, 1)
    await driver.cleanup(set())
    return result


async def run(count: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="hutch-bench-images-", dir="/var/tmp"))
    images = work / "images"
    images.mkdir()
    (images / "devbox_1").symlink_to(IMAGES / "devbox_1")
    registry = OciRegistry(work / "registry").start()
    driver = RuncDriver(work / "home", images=images)
    pool = LinkPool(IPv4Network("10.96.0.0/16"))
    report: dict[str, Any] = {
        "benchmark": "images",
        "machine": {
            "cpus": os.cpu_count(),
            "mem_mib": read_memory().total_mib,
            "kernel": platform.release(),
        },
    }
    try:
        layout = devbox_layout(IMAGES, work / "layout")
        derive_image(layout, base="devbox", tag="app", work=work,
                     files={"/srv/app/hello.txt": "hi\n"},
                     config=["--config.env=APP=1"])  # fmt: skip
        reference = registry.push(layout, "app", "bench/app:1")
        settings = Settings(home=work / "home", images_dir=images,
                            template_registries=f"http://{registry.host}")  # fmt: skip
        started = time.monotonic()
        image = await import_image(reference, settings)
        image_mib = du_bytes(image.rootfs) / MIB
        report["import"] = {
            "seconds": round(time.monotonic() - started, 1),
            "image_mib": round(image_mib, 1),
            "compressed_layers_mib": round(du_bytes(layout / "blobs") / MIB, 1),
        }
        await driver.prepare()
        await Sandboxes(driver, pool).start(image.name, 1)  # makes the disk template
        await driver.cleanup(set())
        base = image_rootfs(images, "devbox:1")
        assert base is not None
        imported = await disk_per_sandbox(
            Sandboxes(driver, pool), image.name, count, work, du_bytes(image.rootfs)
        )
        catalog = await disk_per_sandbox(
            Sandboxes(driver, pool), "devbox:1", count, work, du_bytes(base)
        )
        report["disk"] = {
            "imported_image": imported,
            "catalog_devbox_1": catalog,
            "peer_a_copy_of_the_image_per_sandbox_mib": round(image_mib, 1),
            "ratio_per_sandbox_to_image_copy": round(
                imported["host_disk_mib_per_sandbox_image_included"] / image_mib, 3
            ),
        }
        layers = LayerStore(work / "home" / "layers")
        report["disk"]["template"] = await template_disk(driver, pool, images, layers, count, work)
        report["snapshot"] = await snapshots(driver, pool, images, layers)
    finally:
        await driver.cleanup(set())
        await driver.uninstall()
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "images.json")
    args = parser.parse_args()
    report = asyncio.run(run(args.count))
    text = json.dumps(report, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
