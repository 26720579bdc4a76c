"""The host firewall (nftables) that keeps sandboxes away from the host and each other.

One table per hutch instance. Sandbox links, private networks' bridges and their ports are
matched by interface name prefix, so the rules never change as sandboxes and networks come
and go. Members of a network reach each other across its bridge: with ``br_netfilter`` on,
bridged frames meet the forward chain in and out of the same bridge, and pass. (Routing
from one bridge to another cannot happen: the host has no address, so no route, on any.)
Whatever members send to the host through a bridge, or to be routed anywhere, is dropped,
so a network is no way out and no way into another network. Traffic the host starts
towards a sandbox (preview; exec does not use the network) is allowed, and so are its
replies; anything else a sandbox starts towards the host (DNS aside), or through it,
is dropped. IPv4 and IPv6 alike.

A bridge table keeps each member to its own addresses on its network: a frame from a
member's port must carry that member's MAC and IPv4 address (ARP included), and nothing
but IPv4 and ARP crosses. The allowed pairs are set elements that the network layer adds
and removes as members come and go (:mod:`hutch.host.networks`).
"""

from __future__ import annotations

from hutch.host.proc import run

__all__ = ["Firewall"]


class Firewall:
    def __init__(self, *, tag: str) -> None:
        self.table = f"hutch-{tag}"
        self.link_pattern = f"hv{tag[:4]}*"
        # Private networks' bridges and the host ends of their members' interfaces.
        self.network_patterns = (f"hn{tag[:4]}*", f"hp{tag[:4]}*")
        self.dns_port: int | None = None

    def ruleset(self) -> str:
        links = f'"{self.link_pattern}"'
        bridge, port = (f'"{pattern}"' for pattern in self.network_patterns)
        dns_nat = dns_accept = ""
        if self.dns_port:
            # A sandbox's resolver asks the host end of its link on port 53; the answer
            # comes from hutch's DNS server (hutch.host.dns), which sees who asked.
            dns_nat = f"""
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        iifname {links} meta l4proto {{ tcp, udp }} th dport 53 redirect to :{self.dns_port}
    }}"""
            dns_accept = (
                f"iifname {links} ct status dnat meta l4proto {{ tcp, udp }} "
                f"th dport {self.dns_port} accept"
            )
        return f"""
table bridge {self.table}
delete table bridge {self.table}
table bridge {self.table} {{
    set member_ips {{ type ifname . ipv4_addr; }}
    set member_macs {{ type ifname . ether_addr; }}
    chain forward {{
        type filter hook forward priority -10; policy accept;
        iifname {port} iifname . ether saddr != @member_macs counter drop
        iifname {port} ether type ip iifname . ip saddr != @member_ips counter drop
        iifname {port} ether type arp iifname . arp saddr ip != @member_ips counter drop
        iifname {port} ether type != {{ ip, arp }} counter drop
    }}
}}
table inet {self.table}
delete table inet {self.table}
table inet {self.table} {{{dns_nat}
    chain input {{
        type filter hook input priority -10; policy accept;
        iifname {links} ct state established,related accept
        {dns_accept}
        iifname {links} counter drop
        iifname {{ {bridge}, {port} }} counter drop
    }}
    chain forward {{
        type filter hook forward priority -10; policy accept;
        iifname {bridge} oifname {bridge} accept
        iifname {{ {links}, {bridge}, {port} }} counter drop
        oifname {{ {links}, {bridge}, {port} }} counter drop
    }}
}}
"""

    async def install(self) -> None:
        """Create or replace the table, atomically."""
        await run("nft", "-f", "-", input=self.ruleset().encode())

    async def remove(self) -> None:
        await run("nft", "delete", "table", "inet", self.table, check=False)
        await run("nft", "delete", "table", "bridge", self.table, check=False)
