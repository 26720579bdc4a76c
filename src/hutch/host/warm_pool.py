"""The warm pool: sandboxes prepared before anyone asks, handed out on create.

``HUTCH_WARM_POOL`` (``devbox:1:s-1vcpu-256mb=4,gvisor:devbox:1:s-1vcpu-256mb=2``, entries
``[runtime:]image:shape=count`` comma-separated; no runtime: runc) keeps that many
sandboxes of each (runtime, image, shape) prepared: writable layer mounted, network
namespace and link up, cgroup made, init running, guest agent answering. A create that
matches an entry (that runtime, image and shape, the shape's default disk, not a template
build; on gvisor, no private network, which gVisor joins only before its start) takes one
(:meth:`WarmPool.take`) and the caller names and configures it in place
(:meth:`WarmPool.hand_out`): its hostname (kernel, ``/etc/hostname``, ``/etc/hosts``) and
the environment every command starts with; networks, egress, disks, SSH keys and the rest
are applied by the create path exactly as for a cold start, since they come after the
driver's start there too. On gvisor the kernel's hostname is gVisor's own (its UTS
namespace lives in the Sentry): it is set with ``runsc exec``, beside the rest.

What keeps one owner's state from another's: a prepared sandbox never ran anything for
anyone (its id is drawn when it is prepared and becomes the user's), and at hand-out it is
checked to be as it was prepared: its writable layer holds the same files (names, sizes,
times) as right after preparation, no process but its init runs (runc: its cgroup holds
its init alone; gvisor, whose processes live in the Sentry: no process descends from the
guest agent, read by the agent from gVisor's ``/proc``), its ``/dev/shm`` is empty (gvisor:
read by the agent, the Sentry's memory), and its guest agent served nothing but pings (it
refuses to configure itself otherwise). One that fails a check is destroyed
(:class:`WarmUnusable`) and the create starts cold.

The pool is the host agent's. Prepared sandboxes are in no store record: users never see
or count them; they count against the host (memory, link addresses). Refills run in the
background, one sandbox at a time, each once no create has been in flight for
:data:`QUIET_S` (a create's first exec usually follows it), or after :data:`YIELD_MAX_S`.
Each prepared sandbox's directory holds a ``warm`` marker: at a start, any left by a
crash or kill -9 are destroyed (the store's recovery, which runs first, destroys them
too, as sandboxes it does not know), and a stop destroys the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from hutch.core.catalog import Shape
from hutch.core.ids import new_id
from hutch.host.addresses import LinkPool, PoolExhausted
from hutch.host.drivers.base import DriverError, LinkAddress, SandboxSpec
from hutch.host.drivers.gvisor import GvisorDriver
from hutch.host.drivers.runc import RuncDriver
from hutch.host.guest import GuestError, GuestUnreachable
from hutch.host.layers import GUEST_START
from hutch.host.proc import CommandFailed
from hutch.host.storage import SandboxRootfs
from hutch.host.uts import in_own_thread, set_hostname_here

if TYPE_CHECKING:
    from hutch.host.drivers.runtimes import HostRuntimes

__all__ = [
    "MARKER",
    "Prepared",
    "WarmEntry",
    "WarmPool",
    "WarmUnusable",
    "parse_warm_pool",
]

log = logging.getLogger(__name__)

MARKER = "warm"
"""The file in a prepared sandbox's directory that says it is the pool's."""
PREPARED_HOSTNAME = "sandbox"
MAX_PER_ENTRY = 64
RUNTIMES = ("runc", "gvisor")
YIELD_MAX_S = 2.0
"""How long a refill waits for a quiet moment before it goes ahead anyway."""
QUIET_S = 0.3
"""A refill starts once no create has been in flight for this long."""
_RETRY_S = (1.0, 2.0, 5.0, 15.0, 30.0)

FileState = frozenset[tuple[str, int, int]]


class WarmUnusable(DriverError):
    """A prepared sandbox cannot be handed out (it is not as it was prepared, or did not
    take its new name); the caller destroys it and starts the sandbox cold."""


@dataclass(frozen=True, kw_only=True)
class WarmEntry:
    """One ``[runtime:]image:shape=count`` of ``HUTCH_WARM_POOL``."""

    rootfs: str
    shape: Shape
    count: int
    runtime: str = "runc"

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.runtime, self.rootfs, self.shape.id)

    @property
    def name(self) -> str:
        """``image:shape``, with ``runtime:`` before it but for runc (as configured)."""
        prefix = "" if self.runtime == "runc" else f"{self.runtime}:"
        return f"{prefix}{self.rootfs}:{self.shape.id}"


def parse_warm_pool(
    text: str, *, shapes: Sequence[Shape], images: Iterable[str]
) -> tuple[WarmEntry, ...]:
    """``devbox:1:s-1vcpu-256mb=4,gvisor:node:1:s-1vcpu-512mb=2`` as entries; empty: none.
    Raises :class:`ValueError` naming the entry that is not ``[runtime:]image:shape=count``
    with a runtime of :data:`RUNTIMES` (runc when none), a catalog image, a configured
    shape and a count of 0-64."""
    by_id = {shape.id: shape for shape in shapes}
    known = set(images)
    entries: dict[tuple[str, str, str], WarmEntry] = {}
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        target, sep, count_text = item.rpartition("=")
        rootfs, colon, shape_id = target.rpartition(":")
        if not sep or not colon or not rootfs:
            raise ValueError(f"warm_pool: {item!r} is not [runtime:]image:shape=count")
        runtime, _, named = rootfs.partition(":")
        if rootfs not in known and runtime in RUNTIMES and named:
            rootfs = named
        else:
            runtime = "runc"
        if rootfs not in known:
            raise ValueError(f"warm_pool: {item!r}: image {rootfs!r} is not in {sorted(known)}")
        if shape_id not in by_id:
            raise ValueError(f"warm_pool: {item!r}: shape {shape_id!r} is not in {sorted(by_id)}")
        try:
            count = int(count_text)
        except ValueError:
            count = -1
        if not 0 <= count <= MAX_PER_ENTRY:
            raise ValueError(f"warm_pool: {item!r}: the count must be 0-{MAX_PER_ENTRY}")
        entry = WarmEntry(rootfs=rootfs, shape=by_id[shape_id], count=count, runtime=runtime)
        if entry.key in entries:
            raise ValueError(f"warm_pool: {entry.name} is given twice")
        if count:
            entries[entry.key] = entry
    return tuple(entries.values())


@dataclass(frozen=True, kw_only=True)
class Prepared:
    """A sandbox of the pool, ready to be handed out under its ``id``."""

    id: str
    link: LinkAddress
    entry: WarmEntry
    pid: int
    files: FileState = field(repr=False)
    prepared_at: float


Key = tuple[str, str, str]


class WarmPool:
    """The host's prepared sandboxes, by (runtime, image, shape). Off when ``entries`` is
    empty or the host has no real runtimes (``runtimes`` None: the fake driver)."""

    def __init__(
        self,
        entries: Sequence[WarmEntry],
        *,
        runtimes: HostRuntimes | None,
        links: LinkPool,
        pids_limit: int,
    ) -> None:
        if entries and runtimes is None:
            log.warning("HUTCH_WARM_POOL is ignored: the warm pool needs the runc driver")
        self.entries = tuple(entries) if runtimes is not None else ()
        self._runtimes = runtimes
        self._links = links
        self._pids_limit = pids_limit
        self._ready: dict[Key, list[Prepared]] = {e.key: [] for e in self.entries}
        self._preparing: dict[str, Key] = {}  # sandbox id -> entry key
        self._in_flight = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._last_create_end = 0.0
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.entries)

    def sizes(self) -> dict[str, int]:
        """Prepared sandboxes ready now, by ``[runtime:]image:shape`` as configured (the
        ``hutch_warm_pool_ready`` gauge of ``/metrics``)."""
        return {e.name: len(self._ready[e.key]) for e in self.entries}

    def _driver(self, runtime: str) -> RuncDriver:
        """The driver of a runtime (``runc``, ``gvisor``)."""
        assert self._runtimes is not None
        driver = self._runtimes.for_runtime(runtime)
        assert isinstance(driver, RuncDriver)
        return driver

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Destroy what a previous run left (marked sandboxes), then start refilling.
        Call after the store's recovery, which destroys sandboxes it does not know."""
        if not self.enabled:
            return
        assert self._runtimes is not None
        available = self._runtimes.available()
        for entry in [e for e in self.entries if available.get(e.runtime, "unknown")]:
            log.warning("HUTCH_WARM_POOL's %s is ignored: the %s runtime is not available on "
                        "this host (%s)", entry.name, entry.runtime,
                        available.get(entry.runtime, "unknown"))  # fmt: skip
            del self._ready[entry.key]
        self.entries = tuple(e for e in self.entries if e.key in self._ready)
        await self._destroy_leftovers()
        self._wake.set()
        self._task = asyncio.create_task(self._refill_forever(), name="hutch-warm-pool")

    async def stop(self) -> None:
        """Stop refilling and destroy every prepared sandbox."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        ready = [p for queue in self._ready.values() for p in queue]
        for queue in self._ready.values():
            queue.clear()
        await asyncio.gather(*(self._discard(p.id) for p in ready), return_exceptions=True)

    async def _destroy_leftovers(self) -> None:
        assert self._runtimes is not None
        sandboxes = self._runtimes.sandboxes
        found = await asyncio.to_thread(
            lambda: (
                [d.name for d in sandboxes.iterdir() if (d / MARKER).exists()]
                if sandboxes.is_dir()
                else []
            )
        )
        for sandbox_id in found:
            log.info("destroying %s, a warm sandbox a previous run left", sandbox_id)
            await self._discard(sandbox_id)

    # -- creates ------------------------------------------------------------------------

    @contextlib.contextmanager
    def creating(self) -> Iterator[None]:
        """Around a create: refills wait while one is in flight."""
        self._in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            self._last_create_end = time.monotonic()
            if not self._in_flight:
                self._idle.set()

    def take(self, runtime: str, rootfs: str, shape_id: str) -> Prepared | None:
        """A prepared sandbox of ``runtime``, ``rootfs`` and ``shape_id``, now no longer the
        pool's, or None (no such entry, or none ready: the create starts cold). The caller
        then either :meth:`hand_out` s it or :meth:`give_back` s it untouched."""
        ready = self._ready.get((runtime, rootfs, shape_id))
        if not ready:
            return None
        prepared = ready.pop(0)
        self._wake.set()
        return prepared

    def _held(self, key: Key) -> int:
        """Prepared sandboxes of an entry: ready, and being prepared."""
        return len(self._ready[key]) + sum(1 for k in self._preparing.values() if k == key)

    def give_back(self, prepared: Prepared) -> None:
        """Return a taken sandbox that was not touched (its create was refused)."""
        queue = self._ready.get(prepared.entry.key)
        if queue is None or self._held(prepared.entry.key) >= prepared.entry.count:
            asyncio.get_running_loop().create_task(self._discard(prepared.id))
            return
        queue.insert(0, prepared)

    async def hand_out(self, prepared: Prepared, spec: SandboxSpec) -> None:
        """Make ``prepared`` the sandbox ``spec`` describes (its id and link are the
        prepared one's): check it is as it was prepared, then give it ``spec``'s hostname
        and the environment its commands start with. Raises :class:`WarmUnusable` (the
        caller destroys it and starts cold)."""
        driver = self._driver(prepared.entry.runtime)
        assert spec.id == prepared.id
        try:
            env = driver.process_env(spec)
            if isinstance(driver, GvisorDriver):
                await self._hand_out_gvisor(driver, prepared, spec, env)
                return
            # The host's part (checks, names, hostname) in one short-lived thread, beside
            # the guest's (its environment): a sandbox that fails a check is destroyed anyway.
            # But the configure starts the image's start command (desktop:1's desktop), whose
            # processes and files the checks would see: with one, the checks come first.
            beside: list[Awaitable[object]] = []
            checked = in_own_thread(lambda: self._check_and_name(driver, prepared, spec))
            if env.get(GUEST_START):
                await checked
            else:
                beside.append(checked)
            await asyncio.gather(
                *beside, driver.guest(prepared.id).call({"op": "configure", "env": env})
            )
        except (OSError, GuestError, GuestUnreachable, DriverError) as exc:
            raise WarmUnusable(f"warm sandbox {prepared.id} not handed out: {exc}") from exc

    async def _hand_out_gvisor(
        self, driver: GvisorDriver, prepared: Prepared, spec: SandboxSpec, env: dict[str, str]
    ) -> None:
        """gvisor's hand-out: the files checked and the names written by the host, the
        processes and ``/dev/shm`` checked by the guest agent in gVisor's kernel (with its
        environment), and the kernel's hostname set with ``runsc exec``, side by side."""

        def check_and_name() -> None:
            self._check_files(driver, prepared)
            driver.set_names(prepared.id, spec.hostname, str(spec.link.sandbox))

        beside: list[Awaitable[object]] = []
        if env.get(GUEST_START):  # the configure starts it, and its files: check first
            await asyncio.to_thread(check_and_name)
        else:
            beside.append(asyncio.to_thread(check_and_name))
        await asyncio.gather(
            *beside,
            driver.guest(prepared.id).call({"op": "configure", "env": env, "alone": True}),
            driver.set_hostname(prepared.id, spec.hostname),
        )

    def _check_and_name(self, driver: RuncDriver, prepared: Prepared, spec: SandboxSpec) -> None:
        """In a thread of its own (it joins the sandbox's UTS namespace): check the
        sandbox is as prepared, then give it ``spec``'s names."""
        self._check_files(driver, prepared)
        processes = driver.init_processes(prepared.id)
        if processes != {prepared.pid}:
            raise WarmUnusable(f"processes other than its init ran: {sorted(processes or ())}")
        if os.listdir(f"/proc/{prepared.pid}/root/dev/shm"):
            raise WarmUnusable("its /dev/shm is not empty")
        driver.set_names(prepared.id, spec.hostname, str(spec.link.sandbox))
        set_hostname_here(prepared.pid, spec.hostname)

    def _check_files(self, driver: RuncDriver, prepared: Prepared) -> None:
        directory = driver.directory_of(prepared.id)
        (directory / MARKER).unlink()  # from here on a restart treats it as the store says
        if _file_state(directory) != prepared.files:
            raise WarmUnusable("its files changed after it was prepared")

    # -- refilling ----------------------------------------------------------------------

    def _short(self) -> WarmEntry | None:
        """The entry with the fewest ready sandboxes below its count, if any."""
        short = [e for e in self.entries if len(self._ready[e.key]) < e.count]
        return min(short, key=lambda e: len(self._ready[e.key]) / e.count) if short else None

    async def _refill_forever(self) -> None:
        failures = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            while (entry := self._short()) is not None:
                await self._yield_to_creates()
                try:
                    prepared = await self._prepare(entry)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    pause = _RETRY_S[min(failures, len(_RETRY_S) - 1)]
                    failures += 1
                    log.warning("preparing a warm %s:%s sandbox failed (%s); again in %gs",
                                entry.rootfs, entry.shape.id, exc, pause)  # fmt: skip
                    await asyncio.sleep(pause)
                    continue
                failures = 0
                if len(self._ready[entry.key]) >= entry.count:  # one was given back meanwhile
                    await self._discard(prepared.id)
                else:
                    self._ready[entry.key].append(prepared)

    async def _yield_to_creates(self) -> None:
        """Wait until no create is in flight and none ended in the last :data:`QUIET_S`
        (its first exec usually follows), or :data:`YIELD_MAX_S` at most."""
        deadline = time.monotonic() + YIELD_MAX_S
        while (left := deadline - time.monotonic()) > 0:
            if self._in_flight:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._idle.wait(), left)
                continue
            quiet_for = time.monotonic() - self._last_create_end
            if quiet_for >= QUIET_S:
                return
            await asyncio.sleep(min(QUIET_S - quiet_for, left))

    async def _prepare(self, entry: WarmEntry) -> Prepared:
        driver = self._driver(entry.runtime)
        sandbox_id = new_id("sb_")
        try:
            link = self._links.allocate(sandbox_id)
        except PoolExhausted as exc:
            raise DriverError("no free sandbox address for the warm pool") from exc
        self._preparing[sandbox_id] = entry.key
        try:
            spec = SandboxSpec(
                id=sandbox_id,
                hostname=PREPARED_HOSTNAME,
                rootfs=entry.rootfs,
                vcpu=entry.shape.vcpu,
                mem_mib=entry.shape.mem_mib,
                disk_mib=entry.shape.default_disk_mib,
                link=link,
                pids_limit=self._pids_limit,
                runtime=entry.runtime,
                # No start command yet (desktop:1's desktop): the hand-out's configure
                # starts it, for its owner; before, it would fail the processes check.
                env={GUEST_START: ""},
            )
            try:
                info = await driver.create(spec)
                directory = driver.directory_of(sandbox_id)
                await asyncio.to_thread((directory / MARKER).write_text, f"{entry.rootfs}\n")
                files = await asyncio.to_thread(_settled_file_state, directory)
            except BaseException:
                await asyncio.shield(self._discard(sandbox_id))
                raise
            if info.pid is None:
                await self._discard(sandbox_id)
                raise DriverError("the prepared sandbox has no init pid")
            return Prepared(id=sandbox_id, link=link, entry=entry, pid=info.pid, files=files,
                            prepared_at=time.monotonic())  # fmt: skip
        except (CommandFailed, OSError) as exc:
            self._links.release(sandbox_id)
            raise DriverError(str(exc)) from exc
        except BaseException:
            self._links.release(sandbox_id)
            raise
        finally:
            self._preparing.pop(sandbox_id, None)

    async def _discard(self, sandbox_id: str) -> None:
        assert self._runtimes is not None
        try:
            await self._runtimes.destroy(sandbox_id)  # the driver its runtime marker names
        except DriverError as exc:
            log.warning("destroying warm sandbox %s failed: %s", sandbox_id, exc)
        self._links.release(sandbox_id)


def _file_state(directory: Path) -> FileState:
    """Every path in the sandbox's writable layer with its size and change time."""
    upper = SandboxRootfs(directory, templates=directory).upper()
    found: set[tuple[str, int, int]] = set()
    for root, dirs, files in os.walk(upper):
        for name in (*dirs, *files):
            path = os.path.join(root, name)
            st = os.lstat(path)
            found.add((os.path.relpath(path, upper), st.st_size, st.st_ctime_ns))
    return frozenset(found)


def _settled_file_state(directory: Path, *, wait_s: float = 1.0) -> FileState:
    """The layer's files once the guest agent's own start has written what it writes
    (its self-signal FIFO, made by a thread of its own): unchanged for 50 ms, or
    ``wait_s`` at most."""
    deadline = time.monotonic() + wait_s
    state = _file_state(directory)
    while time.monotonic() < deadline:
        time.sleep(0.05)
        again = _file_state(directory)
        if again == state:
            return state
        state = again
    return state
