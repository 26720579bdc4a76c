"""Facts about this machine: memory, and the address it is known by."""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MemoryInfo", "host_address", "read_memory"]

# Interfaces that hutch itself creates; never the address a host is known by.
_HUTCH_LINK_PREFIXES = ("hutch", "hn-", "hv-", "hb-")


@dataclass(frozen=True, kw_only=True)
class MemoryInfo:
    total_mib: int
    available_mib: int


def read_memory(meminfo: Path = Path("/proc/meminfo")) -> MemoryInfo:
    """Total and available memory (``MemAvailable``: what can be had without swapping)."""
    fields: dict[str, int] = {}
    for line in meminfo.read_text().splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            fields[name] = int(parts[0])
    return MemoryInfo(
        total_mib=fields["MemTotal"] // 1024,
        available_mib=fields.get("MemAvailable", fields.get("MemFree", 0)) // 1024,
    )


def host_address() -> str:
    """The first global IPv4 address of this machine, else its hostname's, else loopback."""
    try:
        out = subprocess.run(
            ["ip", "-j", "-4", "addr", "show", "scope", "global"],
            capture_output=True,
            check=True,
            timeout=5,
            text=True,
        ).stdout
        for link in json.loads(out or "[]"):
            if str(link.get("ifname", "")).startswith(_HUTCH_LINK_PREFIXES):
                continue
            for addr in link.get("addr_info", []):
                if addr.get("family") == "inet" and addr.get("local"):
                    return str(addr["local"])
    except (OSError, subprocess.SubprocessError, ValueError):
        pass
    try:
        address = socket.gethostbyname(socket.gethostname())
        if not ipaddress.ip_address(address).is_loopback:
            return address
    except (OSError, ValueError):
        pass
    return "127.0.0.1"
