"""One host, one owner of its addresses: what a hutch home owns on this machine.

Two instances on one machine (two homes) with the same link pool hand out the same
sandbox addresses, and a sandbox left by one answers the other's previews. So before the
host agent touches anything it takes its home's lock (one agent per home) and looks for
anything else on the host that already uses its pools: an address on an interface, or a
route, that is not one of its own links (``hv<tag>…``, ``hn<tag>…``, ``hp<tag>…``). It
refuses to start, naming what clashes, rather than share them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Network, ip_network
from pathlib import Path
from typing import IO, Any

from hutch.host.proc import run

__all__ = ["HomeInUse", "HomeLock", "find_clashes", "host_clashes"]

LOCK_NAME = "agent.lock"


class HomeInUse(Exception):
    """Another process holds this home's agent lock (its pid in the message)."""


class HomeLock:
    """The home's agent lock, held for the agent's life (the kernel drops it if the process
    dies, so a ``kill -9`` never leaves a stale one)."""

    def __init__(self, home: Path) -> None:
        self.path = home / LOCK_NAME
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock; HomeInUse if another process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise HomeInUse(
                f"another hutch agent is running with the home {self.path.parent} (pid {holder})"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()


@dataclass(frozen=True)
class _Use:
    network: IPv4Network
    what: str
    device: str


def _uses(addresses: list[dict[str, Any]], routes: list[dict[str, Any]]) -> Iterator[_Use]:
    """Every IPv4 address and route on the host, from ``ip -j -4 addr`` and ``ip -j -4
    route show table all``."""
    for link in addresses:
        for info in link.get("addr_info", []):
            if info.get("family") == "inet" and "local" in info:
                network = IPv4Network(f"{info['local']}/32")
                yield _Use(network, f"the address {info['local']}", str(link.get("ifname", "")))
    for route in routes:
        dst = str(route.get("dst", ""))
        if not dst or dst == "default" or route.get("type") in ("broadcast", "local"):
            continue  # a default route overlaps everything; local ones are the addresses
        with contextlib.suppress(ValueError):
            block = ip_network(dst, strict=False)
            if isinstance(block, IPv4Network):
                yield _Use(block, f"the route to {dst}", str(route.get("dev", "")))


def find_clashes(
    pools: dict[str, IPv4Network],
    addresses: list[dict[str, Any]],
    routes: list[dict[str, Any]],
    *,
    own_prefixes: Iterable[str],
) -> list[str]:
    """Each pool's clashes with what the host has, as sentences (empty: none)."""
    own = tuple(own_prefixes)
    found: list[str] = []
    seen: set[tuple[str, IPv4Network, str]] = set()
    for use in _uses(addresses, routes):
        if use.device.startswith(own):
            continue
        for setting, pool in pools.items():
            key = (setting, use.network, use.device)
            if pool.overlaps(use.network) and key not in seen:
                seen.add(key)
                on = f" on {use.device}" if use.device else ""
                found.append(f"{setting} {pool} overlaps {use.what}{on}")
    return found


async def host_clashes(pools: dict[str, IPv4Network], *, tag: str) -> list[str]:
    """What on this host already uses ``pools`` (setting name -> block), besides the links
    of the instance ``tag``."""
    addresses = json.loads((await run("ip", "-j", "-4", "addr", "show")).stdout or b"[]")
    routes = json.loads(
        (await run("ip", "-j", "-4", "route", "show", "table", "all")).stdout or b"[]"
    )
    own = [f"{kind}{tag[:4]}" for kind in ("hv", "hn", "hp")]
    return find_clashes(pools, addresses, routes, own_prefixes=own)
