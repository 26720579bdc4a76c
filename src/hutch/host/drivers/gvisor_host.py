"""Host-side helpers of the gvisor driver (:mod:`hutch.host.drivers.gvisor`): the
namespace's addresses kept across starts, names rewritten in place, a Sentry's process
state, the shape's CPU quota applied after runsc's own work, and the shell fallback of
``hutch-sysview``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, TypeVar

from hutch.host.drivers.base import SandboxMissing, SandboxSpec
from hutch.host.proc import run

log = logging.getLogger("hutch.host.drivers.gvisor")
T = TypeVar("T")

# Hide /proc/sys/net from runsc (keeping the rest of /proc/sys) in a mount namespace of its
# own (see hutch.host.drivers.gvisor): what shim/sysview.c does, for a host without a C
# compiler. $1 is an empty directory to build the view in.
_HIDE_SYS_NET = (
    'set -e; view="$1"; shift; mount -t tmpfs -o size=64k,mode=0555 hutch-sysctl "$view"; '
    'for d in /proc/sys/*; do n="${d##*/}"; [ "$n" = net ] && continue; '
    'mkdir "$view/$n"; mount --bind "$d" "$view/$n"; done; '
    'mount --move "$view" /proc/sys; exec "$@"'
)


# The annotation of a bundle carrying its shape's CPU quota ("<quota> <period>", µs), which
# runsc is not given (see _hold_cpu_quota).
CPU_ANNOTATION = "dev.hutch.cpu"
_CGROUP_ROOT = Path("/sys/fs/cgroup")


def _hold_cpu_quota(config: dict[str, Any]) -> bool:
    """Take the shape's CPU quota out of a bundle's ``config`` (into its annotations);
    return whether it changed. runsc would put the quota on the sandbox's cgroup before
    its own work: a ``runsc restore`` (the saved kernel decoded, its memory loaded) and a
    ``runsc run`` use up to two cores when they can, and one vCPU's quota holds them to
    one (a restore's ~250 ms of CPU, then, cannot take less than ~300 ms). hutch applies
    the quota itself once runsc has returned (:func:`_apply_cpu_quota`)."""
    resources = config.get("linux", {}).get("resources") or {}
    cpu = resources.pop("cpu", None)
    if not cpu:
        return False
    annotations = config.setdefault("annotations", {})
    annotations[CPU_ANNOTATION] = f"{int(cpu['quota'])} {int(cpu['period'])}"
    return True


def _drop_cached(paths: list[Path]) -> None:
    """Write out, then drop from the host's page cache, what is cached of the files
    ``paths`` (those missing are skipped). A hibernated sandbox's disk file (4-5 MiB cached
    once its filesystem is unmounted) and snapshot image (its size, ~2 MiB idle) would stay
    there until the kernel needed the memory: reclaimable, but memory all the same, per
    hibernated sandbox. Blocking: call from a thread."""
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            os.fdatasync(fd)  # (only clean pages are dropped)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError as exc:
            log.debug("%s stays in the page cache: %s", path, exc)
        finally:
            os.close(fd)


def _apply_cpu_quota(cgroup_parent: str, sandbox_id: str, directory: Path) -> bool:
    """Put the CPU quota held in the bundle at ``directory`` on the sandbox's cgroup (v2:
    ``cpu.max``; v1: the ``cpu`` hierarchy's period and quota). False when the bundle
    holds none or the cgroup is not there (runsc made none). Blocking: call from a thread."""
    try:
        config = json.loads((directory / "config.json").read_text())
        quota, period = config["annotations"][CPU_ANNOTATION].split()
    except (OSError, ValueError, KeyError, TypeError):
        return False
    parent = cgroup_parent.strip("/")
    if (_CGROUP_ROOT / "cgroup.controllers").exists():
        cgroup = _CGROUP_ROOT / parent / sandbox_id
        if not cgroup.is_dir():
            return False
        (cgroup / "cpu.max").write_text(f"{quota} {period}\n")
        return True
    cgroup = _CGROUP_ROOT / "cpu" / parent / sandbox_id
    if not cgroup.is_dir():
        return False
    (cgroup / "cpu.cfs_period_us").write_text(f"{period}\n")
    (cgroup / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    return True


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a checkpointed Sentry is a zombie at once, then goes)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return pid > 0 and stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _running_for_s(pid: int) -> float:
    """How long process ``pid`` has run, from its start time in /proc."""
    started = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - started / os.sysconf("SC_CLK_TCK")


async def _restore_addresses(netns: str, saved: Path) -> None:
    """Record the namespace's IPv4 addresses before runsc's first start (which removes them
    from the host kernel) and put them back before a later one (``replace``: those still
    there stay as they are; one ``ip`` run, no reading first)."""
    if await asyncio.to_thread(saved.exists):
        record = json.loads(await asyncio.to_thread(saved.read_text))
        batch = "".join(f"addr replace {ip}/{prefix} dev {ifname}\n"
                        for ifname, ip, prefix in record["addresses"])  # fmt: skip
        if record.get("gateway"):
            batch += f"route replace default via {record['gateway']}\n"
        if batch:
            await run("ip", "-force", "-n", netns, "-batch", "-", input=batch.encode(), check=False)
        return
    shown, routes = await asyncio.gather(
        run("ip", "-n", netns, "-j", "-4", "addr", "show", check=False),
        run("ip", "-n", netns, "-j", "-4", "route", "show", "default", check=False),
    )
    if shown.returncode != 0:
        return
    present = {(a["ifname"], i["local"], i["prefixlen"])
               for a in json.loads(shown.stdout or b"[]") for i in a.get("addr_info", [])
               if a.get("ifname") != "lo"}  # fmt: skip
    gateway = [r.get("gateway") for r in json.loads(routes.stdout or b"[]") if r.get("gateway")]
    if present:
        record = {"addresses": sorted(present), "gateway": gateway[0] if gateway else None}
        await asyncio.to_thread(saved.write_text, json.dumps(record))


def _record_link(saved: Path, spec: SandboxSpec) -> None:
    """Record a new sandbox's addresses when they are its link's alone (``eth0``, the
    default route through the host's end): what :func:`_restore_addresses` reads, known
    without asking the kernel."""
    link = spec.link
    record = {"addresses": [["eth0", str(link.sandbox), link.network.prefixlen]],
              "gateway": str(link.host)}  # fmt: skip
    saved.write_text(json.dumps(record))


def _write_names_in_place(etc: Path, hostname: str, address: str) -> None:
    """Rewrite ``/etc/hostname`` and ``/etc/hosts`` in place (gVisor holds the files open
    through its gofer: a new file under the same name would not be seen inside)."""
    for name, text in (
        ("hostname", hostname + "\n"),
        ("hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                  f"{address}\t{hostname}\n"),
    ):  # fmt: skip
        path = etc / name
        with open(path, "r+" if path.exists() else "w") as handle:
            handle.write(text)
            handle.truncate()


def _link_address(directory: Path) -> str:
    try:
        return (directory / "etc" / "hosts").read_text().splitlines()[-1].split()[0]
    except (OSError, IndexError):
        raise SandboxMissing("the sandbox's address is not known on this host") from None


def _first_line(detail: str) -> str:
    line = detail.strip().splitlines()[0] if detail.strip() else "no output"
    return line[:400]


class Steps:
    """When each step of one wake or fork began and ended (ms from the start), logged at
    INFO as one line (``bench/gvisor.py`` reads them for its breakdown): steps side by
    side show as overlapping spans."""

    def __init__(self, what: str, sandbox_id: str) -> None:
        self.what = what
        self.sandbox_id = sandbox_id
        self.started = time.monotonic()
        self.spans: list[tuple[str, float, float]] = []

    def _ms(self) -> float:
        return (time.monotonic() - self.started) * 1000

    @contextlib.asynccontextmanager
    async def step(self, name: str) -> AsyncIterator[None]:
        begun = self._ms()
        try:
            yield
        finally:
            self.spans.append((name, begun, self._ms()))

    async def timed(self, name: str, step: Awaitable[T]) -> T:
        async with self.step(name):
            return await step

    def log(self) -> None:
        shown = " ".join(f"{name}={begun:.0f}-{ended:.0f}" for name, begun, ended in self.spans)
        log.info("steps %s %s: %s total=%.0f ms", self.what, self.sandbox_id, shown, self._ms())
