"""A sandbox's network namespace and veth pair over rtnetlink, without an ``ip`` process.

``ip netns add`` + ``ip link add … type veth peer … netns …`` + ``ip -n … addr/route`` cost
two processes per sandbox (and two more to take it down). This module does the same in
one short-lived thread of hutch's (:func:`hutch.host.uts.in_own_thread`): the thread
makes a network namespace of its own (``unshare``: namespaces are per thread), pins it at
``/run/netns/<name>`` with a bind mount as ``ip netns add`` does (so ``ip netns`` and runc
see it the same way), and talks ``NETLINK_ROUTE`` to the host's namespace and to the new
one through one socket opened in each. The thread ends with the work, so no thread of
hutch's is ever left in a sandbox's namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import socket
import struct
import threading
from ipaddress import IPv4Address

from hutch.host.libc import libc as c_library

__all__ = ["NETNS_DIR", "add_netns_with_veth", "delete_link", "delete_netns"]

NETNS_DIR = "/run/netns"
_RTM_NEWLINK, _RTM_DELLINK, _RTM_GETLINK, _RTM_NEWADDR, _RTM_NEWROUTE = 16, 17, 18, 20, 24
_NLM_F_REQUEST, _NLM_F_ACK, _NLM_F_EXCL, _NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
_NLMSG_ERROR = 2
_IFLA_IFNAME, _IFLA_LINKINFO, _IFLA_NET_NS_FD = 3, 18, 28
_IFLA_INFO_KIND, _IFLA_INFO_DATA, _VETH_INFO_PEER = 1, 2, 1
_IFA_ADDRESS, _IFA_LOCAL = 1, 2
_RTA_OIF, _RTA_GATEWAY = 4, 5
_IFF_UP = 0x1
_RT_TABLE_MAIN, _RTPROT_BOOT, _RT_SCOPE_UNIVERSE, _RTN_UNICAST = 254, 3, 0, 1
_CLONE_NEWNET = 0x40000000
_MS_BIND, _MS_REC, _MS_SHARED = 0x1000, 0x4000, 1 << 20
_MNT_DETACH = 2
_LOOPBACK_INDEX = 1  # lo is always the first interface of a new namespace
_shared = threading.Lock()
_netns_dir_ready = False


def _libc() -> ctypes.CDLL:
    return c_library()


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _attr(kind: int, payload: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(payload), kind) + payload + b"\0" * (-len(payload) % 4)


def _ifinfo(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, flags, change)


class _Rtnl:
    """One NETLINK_ROUTE socket, bound in the namespace of the thread that made it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def request(self, kind: int, flags: int, body: bytes) -> bytes:
        """Send one request with an ack asked for; the first answer that is not the ack
        (a GETLINK's link), or b"". Raises :class:`OSError` with the kernel's errno."""
        self.seq += 1
        header = struct.pack("=IHHII", 16 + len(body), kind, _NLM_F_REQUEST | _NLM_F_ACK | flags,
                             self.seq, 0)  # fmt: skip
        self.sock.sendto(header + body, (0, 0))
        answer = b""
        while True:
            data = self.sock.recv(65536)
            offset = 0
            while offset + 16 <= len(data):
                length, msg_type, _, seq, _ = struct.unpack_from("=IHHII", data, offset)
                if length < 16:
                    raise OSError(errno.EIO, "a malformed netlink answer")
                if seq == self.seq:
                    if msg_type == _NLMSG_ERROR:
                        (code,) = struct.unpack_from("=i", data, offset + 16)
                        if code:
                            raise OSError(-code, os.strerror(-code))
                        return answer
                    answer = data[offset + 16 : offset + length]
                offset += (length + 3) & ~3

    def index(self, name: str) -> int:
        answer = self.request(
            _RTM_GETLINK, 0, _ifinfo() + _attr(_IFLA_IFNAME, name.encode() + b"\0")
        )
        return int(struct.unpack_from("=BxHiII", answer)[2])

    def up(self, index: int) -> None:
        self.request(_RTM_NEWLINK, 0, _ifinfo(index, _IFF_UP, _IFF_UP))

    def add_address(self, index: int, address: IPv4Address, prefix: int) -> None:
        body = struct.pack("=BBBBI", socket.AF_INET, prefix, 0, _RT_SCOPE_UNIVERSE, index)
        packed = address.packed
        body += _attr(_IFA_LOCAL, packed) + _attr(_IFA_ADDRESS, packed)
        self.request(_RTM_NEWADDR, _NLM_F_CREATE | _NLM_F_EXCL, body)

    def add_default_route(self, index: int, gateway: IPv4Address) -> None:
        body = struct.pack("=BBBBBBBBI", socket.AF_INET, 0, 0, 0, _RT_TABLE_MAIN, _RTPROT_BOOT,
                           _RT_SCOPE_UNIVERSE, _RTN_UNICAST, 0)  # fmt: skip
        body += _attr(_RTA_GATEWAY, gateway.packed) + _attr(_RTA_OIF, struct.pack("=i", index))
        self.request(_RTM_NEWROUTE, _NLM_F_CREATE | _NLM_F_EXCL, body)


def _prepare_netns_dir(libc: ctypes.CDLL) -> None:
    """``/run/netns`` as ``ip netns add`` leaves it: a shared mount of itself, so a
    namespace pinned in it shows in every mount namespace that shares it."""
    global _netns_dir_ready
    with _shared:
        if _netns_dir_ready:
            return
        os.makedirs(NETNS_DIR, mode=0o755, exist_ok=True)
        if libc.mount(b"none", NETNS_DIR.encode(), b"none", _MS_SHARED | _MS_REC, None) != 0:
            if ctypes.get_errno() != errno.EINVAL:  # EINVAL: not a mount point yet
                _check(-1, f"making {NETNS_DIR} shared")
            _check(libc.mount(NETNS_DIR.encode(), NETNS_DIR.encode(), b"none",
                              _MS_BIND | _MS_REC, None), f"binding {NETNS_DIR}")  # fmt: skip
            _check(libc.mount(b"none", NETNS_DIR.encode(), b"none", _MS_SHARED | _MS_REC, None),
                   f"making {NETNS_DIR} shared")  # fmt: skip
        _netns_dir_ready = True


def add_netns_with_veth(
    netns: str,
    host_if: str,
    *,
    host: IPv4Address,
    sandbox: IPv4Address,
    prefix: int,
) -> None:
    """Make the namespace ``netns`` and a veth pair: ``host_if`` on the host with ``host``,
    ``eth0`` in the namespace with ``sandbox`` and a default route via ``host``; both up,
    and ``lo``. Call from a thread that ends right after (it is left in the namespace).
    Raises :class:`OSError`; what was made stays for the caller's cleanup
    (:func:`delete_netns`, :func:`delete_link`)."""
    libc = _libc()
    _prepare_netns_dir(libc)
    outside = _Rtnl()
    try:
        path = os.path.join(NETNS_DIR, netns)
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
        _check(libc.unshare(_CLONE_NEWNET), "unshare")
        _check(libc.mount(b"/proc/thread-self/ns/net", path.encode(), b"none", _MS_BIND, None),
               f"pinning {path}")  # fmt: skip
        inside = _Rtnl()
        nsfd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            # (The peer cannot be made up here: veth_open refuses before the pair is tied.)
            peer = _ifinfo() + _attr(_IFLA_IFNAME, b"eth0\0")
            peer += _attr(_IFLA_NET_NS_FD, struct.pack("=I", nsfd))
            info = _attr(_IFLA_INFO_KIND, b"veth") + _attr(
                _IFLA_INFO_DATA, _attr(_VETH_INFO_PEER, peer)
            )
            body = _ifinfo(0, _IFF_UP, _IFF_UP) + _attr(_IFLA_IFNAME, host_if.encode() + b"\0")
            body += _attr(_IFLA_LINKINFO, info)
            outside.request(_RTM_NEWLINK, _NLM_F_CREATE | _NLM_F_EXCL, body)
            outside.add_address(outside.index(host_if), host, prefix)
            inside.up(_LOOPBACK_INDEX)
            eth0 = inside.index("eth0")
            inside.add_address(eth0, sandbox, prefix)
            inside.up(eth0)
            inside.add_default_route(eth0, host)
        finally:
            os.close(nsfd)
            inside.close()
    finally:
        outside.close()


def delete_netns(netns: str) -> None:
    """Unpin and remove ``/run/netns/<netns>`` (as ``ip netns del``); a missing one is fine."""
    path = os.path.join(NETNS_DIR, netns)
    libc = _libc()
    if libc.umount2(path.encode(), _MNT_DETACH) != 0 and ctypes.get_errno() not in (
        errno.EINVAL,
        errno.ENOENT,
    ):
        _check(-1, f"unmounting {path}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def delete_link(name: str) -> None:
    """Delete the host's interface ``name`` (a veth takes its peer along); a missing one
    is fine."""
    rtnl = _Rtnl()
    try:
        body = _ifinfo() + _attr(_IFLA_IFNAME, name.encode() + b"\0")
        rtnl.request(_RTM_DELLINK, 0, body)
    except OSError as exc:
        if exc.errno != errno.ENODEV:
            raise
    finally:
        rtnl.close()
