"""Egress rules: CreateOS's grammar, the platform deny set, and the policy they make.

A sandbox's ``egress`` is a list of strings (CreateOS §9.1)::

    host          pypi.org            every port of that name
    host:port     github.com:443      that port only
    *.host        *.pythonhosted.org  the subdomains of that name (not the name itself)
    ip            1.1.1.1             every port
    ip:port       1.1.1.1:53
    cidr          198.18.0.0/15       every port of the block
    cidr:port     198.18.0.0/15:8080
    *             *                   everything (as an empty list)

(``*.host:port`` is accepted too.) A port means that TCP or UDP port; a rule without a
port lets every protocol through (ICMP included). An empty list or ``None`` gives the
operator's default (``HUTCH_EGRESS_DEFAULT``, open unless set to ``closed``); ``["*"]`` is
open; one real rule makes the sandbox deny-by-default. Under every policy the platform deny
set (:class:`DenySet`) still applies, so "open" means "the internet", never the host, its
other sandboxes or a private network.

:func:`parse_rules` checks a list and raises :class:`~hutch.core.errors.InvalidInput`
naming the first bad rule's index (field ``egress[3]``). :class:`EgressPolicy` is what the
rest of hutch uses: the IP rules become nftables sets (:mod:`hutch.host.egress`), the
domain rules are answered by :meth:`EgressPolicy.ports_for` when a sandbox resolves a name.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network

from hutch.core.errors import InvalidInput

__all__ = [
    "ALL_PORTS",
    "DENIED_PORTS",
    "MAX_RULES",
    "DenySet",
    "EgressPolicy",
    "EgressRule",
    "RuleKind",
    "parse_cidr_list",
    "parse_rules",
]

MAX_RULES = 256
MAX_RULE_LENGTH = 260  # a 253-character name, a colon and a port
DENIED_PORTS = frozenset({25})
"""TCP ports no sandbox may connect to, whatever its rules (SMTP: spam)."""

ALL_PORTS: None = None
"""In a set of ports, ``None`` stands for "every port and protocol"."""

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_NO_IPV6 = "sandboxes have no IPv6 yet; give an IPv4 address or block"


class RuleKind(StrEnum):
    ANY = "any"  # *
    HOST = "host"  # pypi.org
    SUBDOMAINS = "subdomains"  # *.pythonhosted.org
    NETWORK = "network"  # 1.1.1.1, 10.0.0.0/8 (an address is a /32)


@dataclass(frozen=True, kw_only=True)
class EgressRule:
    """One parsed rule. ``host`` is lower-case without a trailing dot; ``port`` None is
    every port."""

    text: str
    kind: RuleKind
    host: str | None = None
    network: IPv4Network | None = None
    port: int | None = None

    def matches_name(self, name: str) -> bool:
        """Whether this domain rule covers ``name`` (``*.host`` covers subdomains only)."""
        if self.host is None:
            return False
        if self.kind == RuleKind.HOST:
            return name == self.host
        return name.endswith("." + self.host)


@dataclass(frozen=True, kw_only=True)
class EgressPolicy:
    """What a sandbox may reach beyond the deny set.

    ``restricted`` False: everything (the rules are empty, ``["*"]``, or contain ``*``).
    ``restricted`` True: only what ``rules`` name; with no rules, nothing (the operator's
    ``closed`` default).
    """

    rules: tuple[EgressRule, ...] = ()
    restricted: bool = False

    @property
    def networks(self) -> tuple[tuple[IPv4Network, int | None], ...]:
        """The IP and CIDR rules as ``(block, port or None)``, in the kernel's sets."""
        return tuple((rule.network, rule.port) for rule in self.rules if rule.network is not None)

    @property
    def domain_rules(self) -> tuple[EgressRule, ...]:
        return tuple(rule for rule in self.rules if rule.host is not None)

    def ports_for(self, name: str) -> frozenset[int | None] | None:
        """The ports the domain rules allow for ``name``: ``None`` when no rule matches it;
        else a set of port numbers, or ``{None}`` (:data:`ALL_PORTS`) when a matching rule
        has no port. ``*.host`` matches ``a.host`` and ``a.b.host``, never ``host`` itself.

        For an unrestricted policy every name is allowed on every port (``{None}``); the
        caller has nothing to add to the kernel then (the address is allowed already).
        """
        if not self.restricted:
            return frozenset({ALL_PORTS})
        canonical = name.lower().rstrip(".")
        ports = {rule.port for rule in self.domain_rules if rule.matches_name(canonical)}
        if not ports:
            return None
        return frozenset({ALL_PORTS}) if ALL_PORTS in ports else frozenset(ports)


@dataclass(frozen=True, kw_only=True)
class DenyEntry:
    network: IPv4Network
    reason: str


class DenySet:
    """Destinations no sandbox reaches, under any policy: hutch's pools, loopback,
    link-local, RFC 1918, shared address space, multicast, broadcast, 0.0.0.0/8 and
    240.0.0.0/4, plus the operator's ``extra`` blocks; minus ``allow_private`` carved out
    of the private entries (RFC 1918, 100.64.0.0/10, 169.254.0.0/16). hutch's own pools
    are never carved out. The host's own addresses are refused in the kernel too (by the
    input chain, whatever they are; see :mod:`hutch.host.firewall`), and so is TCP port 25.
    """

    def __init__(
        self,
        *,
        link_pool: IPv4Network,
        network_pool: IPv4Network,
        extra: Sequence[IPv4Network] = (),
        allow_private: Sequence[IPv4Network] = (),
    ) -> None:
        carvable = [
            DenyEntry(network=IPv4Network("10.0.0.0/8"), reason="a private (RFC 1918) block"),
            DenyEntry(network=IPv4Network("172.16.0.0/12"), reason="a private (RFC 1918) block"),
            DenyEntry(network=IPv4Network("192.168.0.0/16"), reason="a private (RFC 1918) block"),
            DenyEntry(network=IPv4Network("100.64.0.0/10"), reason="shared address space"),
            DenyEntry(network=IPv4Network("169.254.0.0/16"), reason="link-local (metadata)"),
        ]
        for allowed in allow_private:
            if not any(allowed.subnet_of(entry.network) for entry in carvable):
                raise ValueError(
                    f"egress_allow_private: {allowed} is not inside 10.0.0.0/8, "
                    "172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10 or 169.254.0.0/16"
                )
        entries = [
            DenyEntry(network=link_pool, reason="hutch's sandbox links"),
            DenyEntry(network=network_pool, reason="hutch's private networks"),
            DenyEntry(network=IPv4Network("127.0.0.0/8"), reason="loopback"),
            DenyEntry(network=IPv4Network("0.0.0.0/8"), reason="'this network'"),
            DenyEntry(network=IPv4Network("224.0.0.0/4"), reason="multicast"),
            DenyEntry(network=IPv4Network("240.0.0.0/4"), reason="reserved (and broadcast)"),
        ]
        entries += [DenyEntry(network=net, reason="the operator's deny list") for net in extra]
        for entry in carvable:
            for piece in _carve(entry.network, allow_private):
                entries.append(DenyEntry(network=piece, reason=entry.reason))
        self.entries = tuple(entries)
        self.allow_private = tuple(allow_private)

    @property
    def networks(self) -> list[IPv4Network]:
        """Every denied block, merged, without overlaps (as an nftables interval set wants)."""
        return list(ipaddress.collapse_addresses(entry.network for entry in self.entries))

    def containing(self, network: IPv4Network) -> DenyEntry | None:
        """The entry that holds all of ``network``, if one does."""
        for entry in self.entries:
            if network.subnet_of(entry.network):
                return entry
        return None


def _carve(network: IPv4Network, holes: Iterable[IPv4Network]) -> list[IPv4Network]:
    pieces = [network]
    for hole in holes:
        next_pieces: list[IPv4Network] = []
        for piece in pieces:
            if hole.subnet_of(piece):
                next_pieces.extend(piece.address_exclude(hole))
            elif piece.subnet_of(hole):
                continue
            else:
                next_pieces.append(piece)
        pieces = next_pieces
    return pieces


def parse_cidr_list(text: str, *, setting: str) -> list[IPv4Network]:
    """A comma-separated list of IPv4 blocks (``HUTCH_EGRESS_DENY``); ValueError if bad."""
    networks = []
    for part in (piece.strip() for piece in text.split(",")):
        if not part:
            continue
        try:
            networks.append(IPv4Network(part, strict=True))
        except ValueError as exc:
            raise ValueError(f"{setting}: {part!r} is not an IPv4 block ({exc})") from None
    return networks


def parse_rules(
    rules: Sequence[str] | None, *, deny: DenySet, default_closed: bool = False
) -> EgressPolicy:
    """Check ``rules`` and return their policy; raise InvalidInput naming the first bad
    rule (``egress[i]``), a list over :data:`MAX_RULES`, an IPv6 rule or a rule wholly
    inside the deny set."""
    if rules is None:
        rules = []
    if len(rules) > MAX_RULES:
        raise InvalidInput(f"at most {MAX_RULES} egress rules, got {len(rules)}", field="egress")
    parsed = []
    for index, text in enumerate(rules):
        field = f"egress[{index}]"
        if not isinstance(text, str):
            raise InvalidInput("a rule is a string", field=field)
        rule = _parse_rule(text, field=field)
        if rule.network is not None and (entry := deny.containing(rule.network)) is not None:
            raise InvalidInput(
                f"{text!r} is inside the platform deny set ({entry.network}: {entry.reason}); "
                "no sandbox can reach it",
                field=field,
            )
        if rule.port in DENIED_PORTS:
            raise InvalidInput(
                f"{text!r}: port {rule.port} is in the platform deny set (outbound mail)",
                field=field,
            )
        parsed.append(rule)
    if not parsed:
        return EgressPolicy(restricted=default_closed)
    if any(rule.kind == RuleKind.ANY for rule in parsed):
        return EgressPolicy(rules=tuple(parsed), restricted=False)
    return EgressPolicy(rules=tuple(parsed), restricted=True)


def _parse_rule(text: str, *, field: str) -> EgressRule:
    def bad(why: str) -> InvalidInput:
        return InvalidInput(f"{text[:80]!r} is not an egress rule: {why}", field=field)

    if not text or len(text) > MAX_RULE_LENGTH or text != text.strip():
        raise bad("expected host, host:port, *.host, ip, ip:port, cidr, cidr:port or *")
    if text == "*":
        return EgressRule(text=text, kind=RuleKind.ANY)
    if _looks_ipv6(text):
        raise InvalidInput(f"{text[:80]!r}: {_NO_IPV6}", field=field)
    target, port = text, None
    if ":" in text:
        target, _, port_text = text.rpartition(":")
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise bad("the port must be a number from 1 to 65535")
        port = int(port_text)
    if "/" in target:
        try:
            network = IPv4Network(target, strict=True)
        except ValueError as exc:
            raise bad(f"not an IPv4 block ({exc})") from None
        return EgressRule(text=text, kind=RuleKind.NETWORK, network=network, port=port)
    if re.fullmatch(r"[0-9.]+", target):
        try:
            address = IPv4Address(target)
        except ValueError as exc:
            raise bad(f"not an IPv4 address ({exc})") from None
        return EgressRule(text=text, kind=RuleKind.NETWORK, network=IPv4Network(address),
                          port=port)  # fmt: skip
    kind = RuleKind.HOST
    name = target.lower().rstrip(".")
    if name.startswith("*."):
        kind, name = RuleKind.SUBDOMAINS, name[2:]
    if problem := _name_problem(name):
        raise bad(problem)
    return EgressRule(text=text, kind=kind, host=name, port=port)


def _name_problem(name: str) -> str | None:
    if not name or len(name) > 253:
        return "a host name is 1 to 253 characters"
    labels = name.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels):
        return (
            "a host name is dot-separated labels of letters, digits and '-' "
            "(a wildcard only as the whole first label: *.example.com)"
        )
    if labels[-1].isdigit():
        return "the last label of a host name cannot be all digits"
    return None


def _looks_ipv6(text: str) -> bool:
    candidate = text
    if candidate.startswith("["):
        candidate = candidate[1:].split("]", 1)[0]
    elif candidate.count(":") < 2:
        return False
    for parse in (ipaddress.IPv6Address, ipaddress.IPv6Network):
        try:
            parse(candidate)
            return True
        except ValueError:
            continue
    # "2001:db8::/32:443": a block with a port after it.
    head, _, _ = candidate.rpartition(":")
    try:
        ipaddress.IPv6Network(head, strict=False)
        return True
    except ValueError:
        return candidate.count(":") >= 2
