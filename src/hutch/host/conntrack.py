"""A sandbox's TCP connections that are closing or closed, from the host's connection
tracking (ctnetlink).

Debian's runsc (2022) cannot checkpoint a sandbox holding a TCP endpoint in TIME_WAIT (the
side that closes first keeps one for 60 s), and the sandbox's own ``/proc/net/tcp`` does not
list such endpoints (they have no socket left), so the guest agent cannot see them. A failed
checkpoint stops the sandbox: its processes are lost. The host sees those connections
though: every one to or from a sandbox's address crosses the host's end of its link, where
conntrack follows it (hutch's firewall uses ``ct state``). A dump of the table
(``IPCTNL_MSG_CT_GET``) says which of a sandbox's connections are closing or in TIME_WAIT,
and how long ago their TIME_WAIT began.

Who closed first cannot be told reliably: conntrack marks the direction of the first FIN it
saw (``IP_CT_TCP_FLAG_CLOSE_INIT``), but when both ends close at once (nginx drops its
connection to an HTTP/1.0 server as the server closes it) both end in TIME_WAIT and only
one is marked. So every such connection counts, whoever closed it.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from hutch.host.netlink import NLMSG_DONE, NLMSG_ERROR, attrs, error_code, messages

__all__ = ["ClosedConnection", "closed_connections"]

_NETLINK_NETFILTER = 12
_NFNL_SUBSYS_CTNETLINK = 1
_IPCTNL_MSG_CT_GET = 1
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_CTA_TUPLE_ORIG, _CTA_TUPLE_REPLY, _CTA_PROTOINFO, _CTA_TIMEOUT = 1, 2, 4, 7
_CTA_TUPLE_IP, _CTA_TUPLE_PROTO = 1, 2
_CTA_IP_V4_SRC, _CTA_IP_V4_DST = 1, 2
_CTA_PROTO_NUM, _CTA_PROTO_SRC_PORT, _CTA_PROTO_DST_PORT = 1, 2, 3
_CTA_PROTOINFO_TCP = 1
_CTA_PROTOINFO_TCP_STATE = 1
# enum tcp_conntrack: FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT (4-7): closing or closed.
_CLOSING = {4: "FIN_WAIT", 5: "CLOSE_WAIT", 6: "LAST_ACK", 7: "TIME_WAIT"}
_TIME_WAIT = 7
_TIME_WAIT_TIMEOUT = Path("/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_time_wait")


@dataclass(frozen=True)
class ClosedConnection:
    local: str  # the sandbox's address:port
    remote: str
    state: str  # conntrack's: FIN_WAIT, CLOSE_WAIT, LAST_ACK or TIME_WAIT
    age_s: float | None  # since its TIME_WAIT began (None before)

    def __str__(self) -> str:
        age = f" {self.age_s:.0f} s ago" if self.age_s is not None else ""
        return f"{self.local}->{self.remote} {self.state}{age}"


def closed_connections(addresses: Iterable[str], within_s: float) -> list[ClosedConnection]:
    """The TCP connections of ``addresses`` (IPv4) that are closing, or in a TIME_WAIT
    that began less than ``within_s`` ago. Raises OSError when the table cannot be read
    (no conntrack, no permission)."""
    ours = {socket.inet_aton(a) for a in addresses}
    if not ours:
        return []
    try:
        time_wait_s = int(_TIME_WAIT_TIMEOUT.read_text())
    except (OSError, ValueError):
        time_wait_s = 120
    found = []
    for entry in _dump(ours):
        if entry.orig is None or entry.reply is None:
            continue
        if entry.orig[0] in ours:
            mine = entry.orig
        elif entry.reply[0] in ours:
            mine = entry.reply
        else:
            continue
        if entry.state not in _CLOSING:
            continue
        age = None
        if entry.state == _TIME_WAIT:
            age = float(max(0, time_wait_s - entry.timeout_s))
            if age >= within_s:
                continue
        found.append(ClosedConnection(
            local=f"{socket.inet_ntoa(mine[0])}:{mine[2]}",
            remote=f"{socket.inet_ntoa(mine[1])}:{mine[3]}",
            state=_CLOSING[entry.state], age_s=age))  # fmt: skip
    return found


_Tuple = tuple[bytes, bytes, int, int]


@dataclass
class _Entry:
    orig: _Tuple | None = None
    reply: _Tuple | None = None
    state: int = 0
    timeout_s: int = 0


def _tuple(payload: bytes) -> _Tuple | None:
    """(source, destination, source port, destination port) of a TCP tuple, else None."""
    src = dst = b""
    proto, sport, dport = 0, 0, 0
    for kind, value in attrs(payload):
        if kind == _CTA_TUPLE_IP:
            for ip_kind, ip in attrs(value):
                if ip_kind == _CTA_IP_V4_SRC:
                    src = ip
                elif ip_kind == _CTA_IP_V4_DST:
                    dst = ip
        elif kind == _CTA_TUPLE_PROTO:
            for p_kind, p in attrs(value):
                if p_kind == _CTA_PROTO_NUM:
                    proto = p[0]
                elif p_kind == _CTA_PROTO_SRC_PORT:
                    (sport,) = struct.unpack("!H", p[:2])
                elif p_kind == _CTA_PROTO_DST_PORT:
                    (dport,) = struct.unpack("!H", p[:2])
    if proto != socket.IPPROTO_TCP or len(src) != 4 or len(dst) != 4:
        return None
    return src, dst, sport, dport


def _dump(addresses: set[bytes]) -> Iterator[_Entry]:
    """Each IPv4 TCP entry that holds one of ``addresses`` (raw bytes, found in the message
    before it is parsed: a host may track many thousands): tuples, TCP state, timeout."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_NETFILTER) as sock:
        sock.bind((0, 0))
        body = struct.pack("!BBH", socket.AF_INET, 0, 0)
        kind = (_NFNL_SUBSYS_CTNETLINK << 8) | _IPCTNL_MSG_CT_GET
        sock.send(struct.pack("=IHHII", 16 + len(body), kind, _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0)
                  + body)  # fmt: skip
        while True:
            for msg_kind, _, message in messages(sock.recv(1 << 20)):
                if msg_kind == NLMSG_DONE:
                    return
                if msg_kind == NLMSG_ERROR:
                    if code := error_code(message):
                        raise OSError(code, "conntrack dump refused")
                    continue
                if not any(address in message for address in addresses):
                    continue
                entry = _Entry()
                for attr, payload in attrs(message[4:]):
                    if attr == _CTA_TUPLE_ORIG:
                        entry.orig = _tuple(payload)
                    elif attr == _CTA_TUPLE_REPLY:
                        entry.reply = _tuple(payload)
                    elif attr == _CTA_TIMEOUT:
                        (entry.timeout_s,) = struct.unpack("!I", payload[:4])
                    elif attr == _CTA_PROTOINFO:
                        _tcp_info(payload, entry)
                yield entry


def _tcp_info(payload: bytes, entry: _Entry) -> None:
    for kind, value in attrs(payload):
        if kind != _CTA_PROTOINFO_TCP:
            continue
        for tcp_kind, tcp in attrs(value):
            if tcp_kind == _CTA_PROTOINFO_TCP_STATE:
                entry.state = tcp[0]
