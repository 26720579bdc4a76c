"""The floors under ``bench/gvisor.py``'s figures, measured by hand with ``runsc`` on the
same image and platform, in the same run (no hutch in the way):

- ``bare_runsc_runs``: ``runsc run`` of ``/bin/true`` (read-only root, no network);
- ``bare_runsc_floors``: the steps hutch takes, one by one: ``run --detach``, ``exec true``,
  ``checkpoint`` of the idle sandbox, ``restore --detach``; with ``network=True`` in a
  network namespace of its own with a veth pair and an address (``--network=sandbox``, as
  hutch runs it: the restore then sets up gVisor's netstack on the interface too);
- ``spawn_floors``: what one spawn of ``true`` costs *inside* gVisor, by the way it is
  made: a C loop (static, so no dynamic loading of its own) doing ``fork``+``execve``,
  ``vfork``+``execve`` or ``posix_spawn`` of a dynamic ``/bin/true`` and of a static
  ``true``, and Python's ``subprocess.run`` (what hutch's guest agent does: ``vfork``
  when no user is switched) and ``os.posix_spawn``. An exec through hutch cannot be
  quicker than its spawn.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hutch.host.drivers.gvisor_features import _build_sysview
from hutch.host.images import image_rootfs

PYTHON_IDLE = ["/usr/bin/python3", "-c",
               "import json, socket, subprocess, threading, time; time.sleep(1e9)"]  # fmt: skip

# A spawn loop: argv mode (fork|vfork|spawn), program, count; prints ms per spawn+wait.
_LOOP_C = r"""
#define _GNU_SOURCE
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
extern char **environ;
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
                          return t.tv_sec * 1e3 + t.tv_nsec / 1e6; }
int main(int argc, char **argv) {
  if (argc < 4) return 2;
  const char *mode = argv[1], *prog = argv[2]; int n = atoi(argv[3]);
  char *args[] = {(char *)prog, NULL};
  double t = now();
  for (int i = 0; i < n; i++) {
    pid_t p; int st;
    if (!strcmp(mode, "spawn")) {
      if (posix_spawn(&p, prog, NULL, NULL, args, environ)) return 3;
    } else if (!strcmp(mode, "vfork")) {
      p = vfork(); if (!p) { execve(prog, args, environ); _exit(127); }
    } else {
      p = fork(); if (!p) { execve(prog, args, environ); _exit(127); }
    }
    if (waitpid(p, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st)) return 4;
  }
  printf("%.3f\n", (now() - t) / n);
  return 0;
}
"""
_TRUE_C = "int main(void) { return 0; }\n"

_PYTHON_SPAWNS = """
import os, subprocess, sys, time
n = int(sys.argv[1])
def per(call):
    started = time.perf_counter()
    for _ in range(n):
        call()
    return (time.perf_counter() - started) / n * 1000
def spawn(path):
    pid = os.posix_spawn(path, [path], os.environ)
    os.waitpid(pid, 0)
print(per(lambda: subprocess.run(["/bin/true"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 stdin=subprocess.DEVNULL, start_new_session=True)))
print(per(lambda: spawn("/bin/true")))
print(per(lambda: spawn("/x/true-static")))
"""


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"n": len(ordered), "p50": at(0.50), "p95": at(0.95),
            "mean": round(statistics.fmean(ordered), 2)}  # fmt: skip


def _bundle(images: Path, work: Path, args: list[str], mounts: list[dict[str, Any]]) -> None:
    rootfs = image_rootfs(images, "devbox:1")
    assert rootfs is not None
    subprocess.run(["runsc", "spec"], cwd=work, check=True)
    config = json.loads((work / "config.json").read_text())
    config["root"] = {"path": str(rootfs), "readonly": True}
    config["process"]["terminal"] = False
    config["process"]["args"] = args
    config["mounts"] += mounts
    (work / "config.json").write_text(json.dumps(config))


def bare_runsc_runs(images: Path, count: int) -> list[float]:
    """``runsc run`` of the same image, read-only root, no network, running /bin/true."""
    work = Path(tempfile.mkdtemp(prefix="hutch-bench-runsc-"))
    try:
        _bundle(images, work, ["/bin/true"], [])
        samples = []
        for i in range(count):
            started = time.perf_counter()
            subprocess.run(
                ["runsc", "--root", str(work / "state"), "--network=none", "run", f"bench-{i}"],
                cwd=work, check=True, stdin=subprocess.DEVNULL,
            )  # fmt: skip
            samples.append((time.perf_counter() - started) * 1000)
        return samples
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextmanager
def _netns(name: str) -> Iterator[str]:
    """A network namespace with one end of a veth pair (10.99.254.2/30, a default route
    through the host's end), as hutch gives a sandbox; removed afterwards."""
    host, inside = f"hb{name[-6:]}h", f"hb{name[-6:]}s"

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    ip("netns", "add", name)
    try:
        ip("link", "add", host, "type", "veth", "peer", "name", inside, "netns", name)
        ip("addr", "add", "10.99.254.1/30", "dev", host)
        ip("link", "set", host, "up")
        ip("-n", name, "link", "set", inside, "name", "eth0")
        ip("-n", name, "addr", "add", "10.99.254.2/30", "dev", "eth0")
        ip("-n", name, "link", "set", "eth0", "up")
        ip("-n", name, "link", "set", "lo", "up")
        ip("-n", name, "route", "add", "default", "via", "10.99.254.1")
        yield f"/run/netns/{name}"
    finally:
        subprocess.run(["ip", "link", "del", host], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def bare_runsc_floors(
    images: Path, count: int, platform_name: str, init: list[str] | None = None,
    *, network: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """The same steps hutch takes, by hand with runsc on the same image (read-only root, a
    ``sleep`` or ``init`` as init), with hutch's platform: ``run --detach`` until running,
    ``exec true``, ``checkpoint`` of the idle sandbox, ``restore --detach``, and one
    ``fork+exec+wait`` of ``true`` inside gVisor from Python. ``network``: in a network
    namespace with a veth (``--network=sandbox``), else ``--network=none``."""
    work = Path(tempfile.mkdtemp(prefix="hutch-bench-runsc-"))
    flags = ["runsc", "--root", str(work / "state"), f"--platform={platform_name}",
             "--network=sandbox" if network else "--network=none"]  # fmt: skip
    out: dict[str, list[float]] = {k: [] for k in ("run_detached_ms", "exec_true_ms",
                                                   "checkpoint_ms", "restore_ms",
                                                   "delete_after_checkpoint_ms")}  # fmt: skip
    spawn: list[float] = []
    image_size = 0
    name = f"hutch-bench-{work.name[-6:]}"
    try:
        _bundle(images, work, init or ["/bin/sleep", "infinity"], [])
        config = json.loads((work / "config.json").read_text())
        # With a network, run and restore start as hutch starts them: under hutch-sysview
        # (Debian's runsc refuses a namespace showing /proc/sys/net/core/rmem_default).
        wrap: list[str] = []
        if network:
            sysview = asyncio.run(_build_sysview(work / "tools"))
            assert sysview is not None, "no C compiler for hutch-sysview"
            (work / "view").mkdir()
            wrap = [str(sysview), str(work / "view")]

        def sh(*args: str) -> float:
            started = time.perf_counter()
            wrapped = wrap if args[0] in ("run", "restore") else []
            subprocess.run([*wrapped, *flags, *args], cwd=work, check=True,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)  # fmt: skip
            return (time.perf_counter() - started) * 1000

        for i in range(count):
            sandbox, image = f"bench-{i}", work / f"image-{i}"
            with _netns(name) if network else _nothing() as path:
                if path is not None:  # the sandbox's namespace, as hutch's bundles name it
                    spaces = config["linux"]["namespaces"]
                    config["linux"]["namespaces"] = [
                        s for s in spaces if s["type"] != "network"
                    ] + [{"type": "network", "path": path}]
                    (work / "config.json").write_text(json.dumps(config))
                out["run_detached_ms"].append(sh("run", "--detach", "--bundle", str(work), sandbox))
                for _ in range(3):
                    out["exec_true_ms"].append(sh("exec", sandbox, "/bin/true"))
                if i < 3:
                    per = subprocess.run(
                        [*flags, "exec", sandbox, "python3", "-c",
                         "import subprocess, time; t = time.perf_counter()\n"
                         "for _ in range(20): subprocess.run(['/bin/true'])\n"
                         "print((time.perf_counter() - t) / 20 * 1000)"],
                        cwd=work, check=True, capture_output=True, text=True,
                    )  # fmt: skip
                    spawn.append(float(per.stdout.strip()))
                image.mkdir()
                out["checkpoint_ms"].append(sh("checkpoint", "--image-path", str(image), sandbox))
                image_size = (image / "checkpoint.img").stat().st_size
                out["delete_after_checkpoint_ms"].append(sh("delete", "--force", sandbox))
                if network:  # runsc took the addresses off the interface: put them back
                    subprocess.run(["ip", "-n", name, "addr", "replace", "10.99.254.2/30",
                                    "dev", "eth0"], check=False)  # fmt: skip
                    subprocess.run(["ip", "-n", name, "route", "replace", "default", "via",
                                    "10.99.254.1"], check=False)  # fmt: skip
                out["restore_ms"].append(sh("restore", "--detach", "--image-path", str(image),
                                            "--bundle", str(work), sandbox))  # fmt: skip
                sh("delete", "--force", sandbox)
            shutil.rmtree(image, ignore_errors=True)
        floors: dict[str, Any] = {k: percentiles(v) for k, v in out.items()}
        floors["spawn_true_inside_ms"] = percentiles(spawn)
        floors["platform"] = platform_name
        floors["network"] = "sandbox (a netns with a veth)" if network else "none"
        floors["init"] = " ".join(config["process"]["args"])
        floors["checkpoint_image_kib"] = round(image_size / 1024, 1)
        return floors
    finally:
        _delete_all(flags)
        shutil.rmtree(work, ignore_errors=True)


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


def _delete_all(flags: list[str]) -> None:
    listed = subprocess.run([*flags, "list", "-quiet"], capture_output=True, text=True,
                            check=False).stdout  # fmt: skip
    for line in listed.split():
        subprocess.run([*flags, "delete", "--force", line], capture_output=True, check=False)


def spawn_floors(images: Path, platform_name: str, count: int = 40) -> dict[str, Any]:
    """One spawn+wait of ``true`` inside gVisor (idle Python as init, as hutch's agent),
    by how it is made (see the module's docstring); ms per spawn, p50 of 3 loops of
    ``count``. Needs ``cc`` on the host (static binaries, bind-mounted read-only)."""
    work = Path(tempfile.mkdtemp(prefix="hutch-bench-spawn-"))
    tools = work / "tools"
    tools.mkdir()
    flags = ["runsc", "--root", str(work / "state"), f"--platform={platform_name}",
             "--network=none"]  # fmt: skip
    try:
        (tools / "loop.c").write_text(_LOOP_C)
        (tools / "true.c").write_text(_TRUE_C)
        for name in ("loop", "true"):
            subprocess.run(["cc", "-O2", "-static", "-o", str(tools / f"{name}-static"),
                            str(tools / f"{name}.c")], check=True)  # fmt: skip
        _bundle(images, work, PYTHON_IDLE, [
            {"destination": "/x", "type": "bind", "source": str(tools), "options": ["bind", "ro"]}
        ])  # fmt: skip
        subprocess.run([*flags, "run", "--detach", "--bundle", str(work), "spawns"], cwd=work,
                       check=True, stdin=subprocess.DEVNULL)  # fmt: skip
        time.sleep(1)

        def inside(*argv: str) -> list[float]:
            done = subprocess.run([*flags, "exec", "spawns", *argv], check=True,
                                  capture_output=True, text=True)  # fmt: skip
            return [float(line) for line in done.stdout.split()]

        results: dict[str, list[float]] = {}
        for _ in range(3):
            for mode in ("fork", "vfork", "spawn"):
                for program, label in (("/bin/true", "dynamic"), ("/x/true-static", "static")):
                    key = f"c_{mode}_{label}_true_ms"
                    results.setdefault(key, []).extend(
                        inside("/x/loop-static", mode, program, str(count))
                    )
            python = inside("python3", "-c", _PYTHON_SPAWNS, str(count))
            names = ("python_subprocess_run_true_ms", "python_posix_spawn_dynamic_true_ms",
                     "python_posix_spawn_static_true_ms")  # fmt: skip
            for key, value in zip(names, python, strict=True):
                results.setdefault(key, []).append(value)
        report: dict[str, Any] = {k: round(statistics.median(v), 2) for k, v in results.items()}
        report["platform"] = platform_name
        report["loops"] = f"3 x {count}"
        return report
    finally:
        _delete_all(flags)
        shutil.rmtree(work, ignore_errors=True)


class PairedRestore:
    """A bare ``runsc restore`` of an idle ``python3`` in a network namespace (hutch's
    way: ``--network=sandbox`` under hutch-sysview), made ready (run, checkpoint,
    delete) before each timed restore, so that it can be timed right beside the figure
    it is the peer of: on a shared machine the load moves between a run's phases, and
    only peers measured side by side give a ratio that holds."""

    def __init__(self, images: Path, platform_name: str) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="hutch-bench-paired-"))
        self.flags = ["runsc", "--root", str(self.work / "state"),
                      f"--platform={platform_name}", "--network=sandbox"]  # fmt: skip
        self.netns = f"hutch-bench-{self.work.name[-6:]}"
        self.count = 0
        _bundle(images, self.work, PYTHON_IDLE, [])
        sysview = asyncio.run(_build_sysview(self.work / "tools"))
        assert sysview is not None, "no C compiler for hutch-sysview"
        (self.work / "view").mkdir()
        self.wrap = [str(sysview), str(self.work / "view")]
        self._space = _netns(self.netns)
        path = self._space.__enter__()
        config = json.loads((self.work / "config.json").read_text())
        config["linux"]["namespaces"] = [
            s for s in config["linux"]["namespaces"] if s["type"] != "network"
        ] + [{"type": "network", "path": path}]
        (self.work / "config.json").write_text(json.dumps(config))

    def _runsc(self, *args: str, wrapped: bool = False) -> None:
        subprocess.run([*(self.wrap if wrapped else []), *self.flags, *args], cwd=self.work,
                       check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)  # fmt: skip

    def prepare(self) -> Path:
        """An idle sandbox run, checkpointed and deleted: its image."""
        self.count += 1
        image = self.work / f"image-{self.count}"
        image.mkdir()
        self._runsc("run", "--detach", "--bundle", str(self.work), "paired", wrapped=True)
        time.sleep(1)
        self._runsc("checkpoint", "--image-path", str(image), "paired")
        self._runsc("delete", "--force", "paired")
        for args in (("addr", "replace", "10.99.254.2/30", "dev", "eth0"),
                     ("route", "replace", "default", "via", "10.99.254.1")):  # fmt: skip
            subprocess.run(["ip", "-n", self.netns, *args], check=False)
        return image

    def restore(self, image: Path) -> float:
        """``runsc restore --detach`` of ``image`` (ms), then the sandbox deleted."""
        started = time.perf_counter()
        self._runsc("restore", "--detach", "--image-path", str(image), "--bundle",
                    str(self.work), "paired", wrapped=True)  # fmt: skip
        took = (time.perf_counter() - started) * 1000
        self._runsc("delete", "--force", "paired")
        shutil.rmtree(image, ignore_errors=True)
        return took

    def close(self) -> None:
        _delete_all(self.flags)
        self._space.__exit__(None, None, None)
        shutil.rmtree(self.work, ignore_errors=True)
