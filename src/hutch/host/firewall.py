"""The host firewall (nftables) that keeps sandboxes away from the host and each other.

One table per hutch instance. Sandbox links are matched by interface name prefix, so the
rules never change as sandboxes come and go. Traffic the host starts towards a sandbox
(preview, exec does not use the network) is allowed, and so are its replies; anything a
sandbox starts towards the host, or through it, is dropped. IPv4 and IPv6 alike.
"""

from __future__ import annotations

from hutch.host.proc import run

__all__ = ["Firewall"]


class Firewall:
    def __init__(self, *, tag: str) -> None:
        self.table = f"hutch-{tag}"
        self.link_pattern = f"hv{tag[:4]}*"

    def ruleset(self) -> str:
        links = f'"{self.link_pattern}"'
        return f"""
table inet {self.table}
delete table inet {self.table}
table inet {self.table} {{
    chain input {{
        type filter hook input priority -10; policy accept;
        iifname {links} ct state established,related accept
        iifname {links} counter drop
    }}
    chain forward {{
        type filter hook forward priority -10; policy accept;
        iifname {links} counter drop
        oifname {links} counter drop
    }}
}}
"""

    async def install(self) -> None:
        """Create or replace the table, atomically."""
        await run("nft", "-f", "-", input=self.ruleset().encode())

    async def remove(self) -> None:
        await run("nft", "delete", "table", "inet", self.table, check=False)
