"""The nftables side of a sandbox's egress policy as text and netlink messages: the
``nft -f`` scripts that install and remove its chains, sets, quota and counters, and the
set changes a new policy or a DNS answer makes (the layout is :mod:`hutch.host.egress`'s)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, collapse_addresses

from hutch.host.egress import EgressSpec
from hutch.host.nfnetlink import flush_message, keys_message, ranges_message

__all__ = ["Resolved", "apply_script", "policy_batch", "remove_script", "resolved_elements"]


def _names(ifname: str) -> dict[str, str]:
    kinds = ("e", "m", "a", "ap", "d", "dp", "q", "tx", "rx")
    return {kind: f"{kind}_{ifname}" for kind in kinds}


def apply_script(
    table: str,
    ifname: str,
    spec: EgressSpec,
    *,
    used_now: int,
    seed_sent: int,
    seed_received: int,
    prune: Sequence[Resolved] = (),
) -> str:
    """The one transaction that installs or replaces a sandbox's policy and meter.

    ``used_now`` is the sandbox's current outbound count (the quota rule starts there);
    ``seed_*`` are the counters' starting values if they do not exist yet; ``prune`` lists
    resolved elements to remove.
    """
    n = _names(ifname)
    t = f"inet {table}"
    any_port = [f"{net} . 0-255" for net in _merged(spec.networks, None)]
    ports = sorted({port for _, port in spec.networks if port is not None})
    with_port = [f"{net} . {port}" for port in ports for net in _merged(spec.networks, port)]
    lines = [
        f"add counter {t} {n['tx']} {{ packets 0 bytes {seed_sent} ; }}",
        f"add counter {t} {n['rx']} {{ packets 0 bytes {seed_received} ; }}",
        f"add set {t} {n['a']} {{ type ipv4_addr . inet_proto ; flags interval ; }}",
        f"flush set {t} {n['a']}",
        f"add set {t} {n['ap']} {{ type ipv4_addr . inet_service ; flags interval ; }}",
        f"flush set {t} {n['ap']}",
        f"add set {t} {n['d']} {{ type ipv4_addr ; flags timeout ; }}",
        f"add set {t} {n['dp']} {{ type ipv4_addr . inet_service ; flags timeout ; }}",
    ]
    if any_port:
        lines.append(f"add element {t} {n['a']} {{ {', '.join(any_port)} }}")
    if with_port:
        lines.append(f"add element {t} {n['ap']} {{ {', '.join(with_port)} }}")
    lines += [f"delete element {t} {r.set_name} {{ {r.element} }}" for r in prune]
    # The quota is made anew each time (its use starting from the counter, not from what
    # it refused): added first so that it exists to be deleted, once no rule uses it.
    lines += [
        f"add chain {t} {n['m']}",
        f"add quota {t} {n['q']} {{ over 0 bytes ; }}",
        f"flush chain {t} {n['m']}",
        f"delete quota {t} {n['q']}",
    ]
    if spec.quota_bytes >= 0:
        # The kernel refuses a quota used beyond its size; at its size it is used up.
        used = min(used_now, spec.quota_bytes)
        lines += [
            f"add quota {t} {n['q']} {{ over {spec.quota_bytes} bytes used {used} bytes ; }}",
            f'add rule {t} {n["m"]} quota name "{n["q"]}" goto refuse',
        ]
    lines.append(f'add rule {t} {n["m"]} counter name "{n["tx"]}" accept')
    lines += [f"add chain {t} {n['e']}", f"flush chain {t} {n['e']}"]
    # Root inside has CAP_NET_RAW: a packet with any source but its own would leave
    # unmasqueraded (or as another sandbox's).
    # The chain is the same for every policy, so that a PUT changes set elements only
    # (EgressFirewall.apply does that over netlink): open is membership of egress_open.
    lines += [
        f"add rule {t} {n['e']} ip saddr != {IPv4Address(spec.ip)} drop",
        f"add rule {t} {n['e']} iifname @egress_open goto {n['m']}",
        f"add rule {t} {n['e']} ip daddr . meta l4proto @{n['a']} goto {n['m']}",
        f"add rule {t} {n['e']} ip daddr @{n['d']} goto {n['m']}",
        f"add rule {t} {n['e']} meta l4proto {{ tcp, udp }} ip daddr . th dport "
        f"@{n['ap']} goto {n['m']}",
        f"add rule {t} {n['e']} meta l4proto {{ tcp, udp }} ip daddr . th dport "
        f"@{n['dp']} goto {n['m']}",
        f"add rule {t} {n['e']} goto refuse",
        f'add element {t} egress_open {{ "{ifname}" }}',
    ]
    if spec.restricted:
        lines.append(f'delete element {t} egress_open {{ "{ifname}" }}')
    lines += [
        f'add element {t} egress_links {{ "{ifname}" : goto {n["e"]} }}',
        f'add element {t} ingress_counters {{ "{ifname}" : "{n["rx"]}" }}',
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Resolved:
    """An element a DNS answer put in a sandbox's ``d_``/``dp_`` set."""

    set_name: str
    address: str
    port: int | None

    @property
    def element(self) -> str:
        return self.address if self.port is None else f"{self.address} . {self.port}"

    @property
    def key(self) -> bytes:
        return _key(self.address, self.port)


def _key(address: str | IPv4Address, port: int | None) -> bytes:
    """An element's key as the kernel holds it: in a concatenation every field takes 4
    bytes (a port 2, in network order, then padding)."""
    packed = IPv4Address(address).packed
    return packed if port is None else packed + port.to_bytes(2, "big") + b"\0\0"


def policy_batch(
    table: str, ifname: str, spec: EgressSpec, *, was_open: bool, prune: Sequence[Resolved]
) -> list[tuple[int, int, bytes]]:
    """A policy's blocks, its openness and stale resolved elements, as netlink messages
    (:func:`hutch.host.nfnetlink.batch`) for a sandbox whose chains :func:`apply_script`
    made: its sets emptied and filled again, in one transaction."""
    n = _names(ifname)
    any_port = [(_key(net[0], None) + b"\0\0\0\0", _key(net[-1], None) + b"\xff\0\0\0")
                for net in _merged(spec.networks, None)]  # fmt: skip
    with_port = [(_key(net[0], port), _key(net[-1], port))
                 for port in sorted({p for _, p in spec.networks if p is not None})
                 for net in _merged(spec.networks, port)]  # fmt: skip
    messages = [flush_message(table, n["a"]), flush_message(table, n["ap"])]
    if any_port:
        messages += ranges_message(table, n["a"], any_port)
    if with_port:
        messages += ranges_message(table, n["ap"], with_port)
    name = ifname.encode().ljust(16, b"\0")  # an ifname key is IFNAMSIZ bytes
    if was_open and spec.restricted:
        messages += keys_message(table, "egress_open", [name], add=False)
    elif not was_open and not spec.restricted:
        messages += keys_message(table, "egress_open", [name], add=True)
    for set_name in sorted({r.set_name for r in prune}):
        keys = [r.key for r in prune if r.set_name == set_name]
        messages += keys_message(table, set_name, keys, add=False)
    return messages


def _merged(
    networks: Sequence[tuple[IPv4Network, int | None]], port: int | None
) -> list[IPv4Network]:
    """The blocks with ``port``, overlaps merged: an interval set refuses overlapping
    elements (rules such as ``198.51.0.0/16`` and ``198.51.100.0/24`` together)."""
    return list(collapse_addresses(net for net, p in networks if p == port))


def remove_script(table: str, ifname: str) -> str:
    n = _names(ifname)
    t = f"inet {table}"
    return "\n".join([
        f'delete element {t} egress_links {{ "{ifname}" }}',
        f'delete element {t} ingress_counters {{ "{ifname}" }}',
        f'add element {t} egress_open {{ "{ifname}" }}',  # so that it exists to be deleted
        f'delete element {t} egress_open {{ "{ifname}" }}',
        f"flush chain {t} {n['e']}",
        f"flush chain {t} {n['m']}",
        f"delete chain {t} {n['e']}",
        f"delete chain {t} {n['m']}",
        f"add quota {t} {n['q']} {{ over 0 bytes ; }}",  # so that it exists to be deleted
        f"delete quota {t} {n['q']}",
        *(f"delete set {t} {n[kind]}" for kind in ("a", "ap", "d", "dp")),
        f"delete counter {t} {n['tx']}",
        f"delete counter {t} {n['rx']}",
    ]) + "\n"  # fmt: skip


def resolved_elements(
    ifname: str, addresses: Sequence[str], port: int | None
) -> tuple[str, list[bytes]]:
    """The set that DNS-resolved ``addresses`` go in (with ``port``, or every port) and
    their keys as the kernel holds them (:func:`hutch.host.nfnetlink.add_timed_elements`)."""
    n = _names(ifname)
    return n["d"] if port is None else n["dp"], [_key(a, port) for a in addresses]
