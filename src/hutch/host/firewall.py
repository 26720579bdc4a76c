"""The host firewall (nftables) that keeps sandboxes away from the host and each other.

One table per hutch instance. Sandbox links, private networks' bridges and their ports are
matched by interface name prefix, so the rules never change as sandboxes and networks come
and go. Members of a network reach each other across its bridge: with ``br_netfilter`` on,
bridged frames meet the forward chain in and out of the same bridge, and pass. Whatever
members send to the host through a bridge, or to be routed anywhere, is dropped, so a
network is no way out and no way into another network. Traffic the host starts towards a
sandbox (preview; exec does not use the network) is allowed, and so are its replies.

A sandbox reaches the internet through its own link only: what it sends through the host
to any interface that is not a hutch link or bridge goes to the ``egress`` chain, which
refuses the platform deny set (``egress_deny``: hutch's pools, private, link-local and
reserved blocks; see :class:`hutch.core.egress.DenySet`) and TCP port 25, then jumps
through the ``egress_links`` verdict map to the sandbox's own policy and meter
(:mod:`hutch.host.egress`; ``egress_open`` lists the links whose policy is open); a
sandbox with no entry there is refused. It leaves
masqueraded as the host (IPv4 forwarding is switched on when a link pool is given).
Anything else a sandbox starts towards the host (DNS aside) or another sandbox is refused
at once: a TCP reset, else ICMP admin-prohibited, so tools fail fast. The host's own
addresses, on every interface, are covered by the input chain (a packet to a local address
never reaches the forward hook). IPv4 and IPv6 alike; sandboxes have no IPv6 route out.

A bridge table keeps each member to its own addresses on its network: a frame from a
member's port must carry that member's MAC and IPv4 address (ARP included), and nothing
but IPv4 and ARP crosses. The allowed pairs are set elements that the network layer adds
and removes as members come and go (:mod:`hutch.host.networks`).
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Network

from hutch.host.nfnetlink import counters
from hutch.host.proc import run

__all__ = ["Firewall"]


class Firewall:
    def __init__(self, *, tag: str) -> None:
        self.table = f"hutch-{tag}"
        self.link_pattern = f"hv{tag[:4]}*"
        # Private networks' bridges and the host ends of their members' interfaces.
        self.network_patterns = (f"hn{tag[:4]}*", f"hp{tag[:4]}*")
        self.dns_port: int | None = None
        self.link_pool: IPv4Network | None = None
        """Set it to let sandboxes out (NAT from this pool); None keeps them in."""
        self.egress_deny: Sequence[IPv4Network] = ()
        self.overlay_port: int | None = None
        """In a cluster, the VXLAN port: only the peer hosts in the set ``overlay_peers``
        (kept by :mod:`hutch.cluster.overlay`) may send to it."""
        self.salvaged: dict[str, int] = {}
        """The named counters (bytes) of the table that :meth:`install` replaced."""

    def ruleset(self) -> str:
        links = f'"{self.link_pattern}"'
        bridge, port = (f'"{pattern}"' for pattern in self.network_patterns)
        hutch_ifs = f"{{ {links}, {bridge}, {port} }}"
        dns_nat = dns_accept = nat = ""
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
        if self.link_pool is not None:
            nat = f"""
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr {self.link_pool} oifname != {hutch_ifs} masquerade
    }}"""
        overlay_set = overlay_rule = ""
        if self.overlay_port:
            overlay_set = "\n    set overlay_peers { type ipv4_addr; }"
            overlay_rule = f"udp dport {self.overlay_port} ip saddr != @overlay_peers counter drop"
        deny = ", ".join(str(network) for network in self.egress_deny)
        deny_elements = f"elements = {{ {deny} }}" if deny else ""
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
table inet {self.table} {{{dns_nat}{nat}
    set egress_deny {{ type ipv4_addr; flags interval; {deny_elements} }}{overlay_set}
    map egress_links {{ type ifname : verdict; }}
    set egress_open {{ type ifname; }}
    map ingress_counters {{ type ifname : counter; }}
    chain refuse {{
        meta l4proto tcp reject with tcp reset
        reject with icmpx type admin-prohibited
    }}
    chain egress {{
        meta nfproto ipv6 goto refuse
        ip daddr @egress_deny goto refuse
        tcp dport 25 goto refuse
        iifname vmap @egress_links
        goto refuse
    }}
    chain ingress {{
        counter name oifname map @ingress_counters
        accept
    }}
    chain input {{
        type filter hook input priority -10; policy accept;
        iifname {links} ct state established,related accept
        {overlay_rule}
        {dns_accept}
        iifname {links} counter goto refuse
        iifname {{ {bridge}, {port} }} counter drop
    }}
    chain forward {{
        type filter hook forward priority -10; policy accept;
        iifname {bridge} oifname {bridge} accept
        iifname {links} oifname != {hutch_ifs} goto egress
        iifname != {hutch_ifs} oifname {links} ct state established,related goto ingress
        iifname {links} counter goto refuse
        iifname {{ {bridge}, {port} }} counter drop
        oifname {hutch_ifs} counter drop
    }}
}}
"""

    async def install(self) -> None:
        """Create or replace the table, atomically (keeping its counters' last values in
        :attr:`salvaged`), and switch IPv4 forwarding on if sandboxes may go out."""
        self.salvaged = await counters(self.table)
        await run("nft", "-f", "-", input=self.ruleset().encode())
        if self.link_pool is not None:
            await run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")

    async def remove(self) -> None:
        await run("nft", "delete", "table", "inet", self.table, check=False)
        await run("nft", "delete", "table", "bridge", self.table, check=False)
