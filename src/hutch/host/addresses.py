"""Addresses for the host-sandbox links: a /30 of the pool per sandbox."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from hutch.host.drivers.base import LinkAddress

__all__ = ["LinkPool", "PoolExhausted"]


class PoolExhausted(Exception):
    pass


class LinkPool:
    """Hands out /30 links; the lowest free one first, so addresses are reused."""

    def __init__(self, network: IPv4Network) -> None:
        if network.prefixlen > 30:
            raise ValueError(f"{network} is too small for a /30 link")
        self.network = network
        # Block i is the /30 at offset 4*i, worked out when asked for: a /16 has 16,384
        # of them, and making them all up front cost every process that builds a
        # HostAgent (the agent and each API worker) 0.1-0.7 s at its start.
        self._count = network.num_addresses // 4
        self._owner: dict[int, str] = {}
        self._by_sandbox: dict[str, int] = {}

    def allocate(self, sandbox_id: str) -> LinkAddress:
        if sandbox_id in self._by_sandbox:
            return self._link(self._by_sandbox[sandbox_id])
        for index in range(self._count):
            if index not in self._owner:
                self._owner[index] = sandbox_id
                self._by_sandbox[sandbox_id] = index
                return self._link(index)
        raise PoolExhausted(f"no free link address left in {self.network}")

    def reserve(self, sandbox_id: str, sandbox_ip: str) -> LinkAddress | None:
        """Claim the link whose sandbox end is ``sandbox_ip`` (after a restart)."""
        address = IPv4Address(sandbox_ip)
        if address not in self.network:
            return None
        index = (int(address) - int(self.network.network_address)) // 4
        owner = self._owner.get(index)
        if owner not in (None, sandbox_id):
            return None
        self._owner[index] = sandbox_id
        self._by_sandbox[sandbox_id] = index
        return self._link(index)

    def release(self, sandbox_id: str) -> None:
        index = self._by_sandbox.pop(sandbox_id, None)
        if index is not None:
            self._owner.pop(index, None)

    def _link(self, index: int) -> LinkAddress:
        block = IPv4Network((int(self.network.network_address) + 4 * index, 30))
        return LinkAddress(
            network=block, host=block.network_address + 1, sandbox=block.network_address + 2
        )
