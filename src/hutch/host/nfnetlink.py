"""nftables counters, quotas and set elements straight from and to the kernel, over netlink.

``nft list counter …`` (and libnftables) first fetches a cache of the whole ruleset,
every set's elements included: with a thousand sandboxes' policies in hutch's table that
is seconds per read. The kernel answers a request for one named object (or every object
of one type in one table) by itself, in well under a millisecond whatever else the table
holds; this module asks it that (``NFT_MSG_GETOBJ`` on a ``NETLINK_NETFILTER`` socket).

It also adds the addresses a restricted sandbox's DNS answers allow (the one change on a
hot path: the answer waits for it) as one batch of ``NFT_MSG_NEWSETELEM`` and
``NFT_MSG_DELSETELEM`` messages, which the kernel applies as one transaction, with no
cache to fetch first. Every other change goes through :mod:`hutch.host.nft`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from hutch.host import netlink
from hutch.host.netlink import NLMSG_DONE, NLMSG_ERROR, attrs, error_code

__all__ = [
    "Message",
    "NetlinkError",
    "Quota",
    "add_timed_elements",
    "batch",
    "counters",
    "flush_message",
    "keys_message",
    "ranges_message",
    "read_counter",
    "read_quota",
]

_NETLINK_NETFILTER = 12
_SO_SNDBUFFORCE = 32
_NFNL_SUBSYS_NFTABLES = 10
_NFT_MSG_NEWSETELEM, _NFT_MSG_DELSETELEM, _NFT_MSG_GETOBJ = 12, 14, 19
_NFNL_MSG_BATCH_BEGIN, _NFNL_MSG_BATCH_END = 0x10, 0x11
_NLM_F_CREATE = 0x400
_NFTA_SET_ELEM_LIST_TABLE, _NFTA_SET_ELEM_LIST_SET, _NFTA_SET_ELEM_LIST_ELEMENTS = 1, 2, 3
_NFTA_LIST_ELEM = 1
_NFTA_SET_ELEM_KEY, _NFTA_SET_ELEM_TIMEOUT, _NFTA_SET_ELEM_USERDATA = 1, 4, 6
_NFTA_SET_ELEM_KEY_END = 10
_NFTA_DATA_VALUE = 1
_UDATA_SET_ELEM_COMMENT = 0
_NFPROTO_INET = 1
_NLM_F_REQUEST, _NLM_F_ACK, _NLM_F_DUMP = 0x1, 0x4, 0x300
_NLA_F_NESTED = 1 << 15
_NFTA_OBJ_TABLE, _NFTA_OBJ_NAME, _NFTA_OBJ_TYPE, _NFTA_OBJ_DATA = 1, 2, 3, 4
_OBJECT_COUNTER, _OBJECT_QUOTA = 1, 2
_NFTA_COUNTER_BYTES = 1
_NFTA_QUOTA_BYTES, _NFTA_QUOTA_FLAGS, _NFTA_QUOTA_CONSUMED = 1, 2, 4
_QUOTA_F_DEPLETED = 1 << 1


class NetlinkError(OSError):
    pass


@dataclass(frozen=True)
class Quota:
    limit_bytes: int
    consumed_bytes: int
    depleted: bool
    """The kernel's own flag: a packet found the quota used up."""


def _attr(kind: int, payload: bytes) -> bytes:
    header = struct.pack("=HH", 4 + len(payload), kind)
    return header + payload + b"\0" * (-len(payload) % 4)


class _Socket:
    """One netlink socket, one request at a time (a lock), in the caller's thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._seq = 0

    @contextlib.contextmanager
    def _using(self) -> Iterator[socket.socket]:
        """The socket, for one exchange at a time; made again after one that failed."""
        with self._lock:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_NETFILTER)
                self._sock.bind((0, 0))
            try:
                yield self._sock
            except NetlinkError:
                raise
            except OSError as exc:
                self._sock.close()
                self._sock = None
                # Callers handle NetlinkError (a refused change falls back, a read is None).
                raise NetlinkError(exc.errno or errno.EIO, exc.strerror or str(exc)) from exc

    def _message(self, kind: int, flags: int, body: bytes) -> tuple[int, bytes]:
        """``(sequence number, message)``; call with the lock held."""
        self._seq += 1
        header = struct.pack("=IHHII", 16 + len(body), kind, _NLM_F_REQUEST | flags, self._seq, 0)
        return self._seq, header + body

    def request(self, table: str, kind: int, name: str | None) -> list[tuple[str, bytes]]:
        """``(name, NFTA_OBJ_DATA)`` of the ``kind`` objects of ``inet table`` (one, by
        name, or all). A missing table or object is an empty list."""
        body = struct.pack("!BBH", _NFPROTO_INET, 0, 0)
        body += _attr(_NFTA_OBJ_TABLE, table.encode() + b"\0")
        if name is not None:
            body += _attr(_NFTA_OBJ_NAME, name.encode() + b"\0")
        body += _attr(_NFTA_OBJ_TYPE, struct.pack("!I", kind))
        flags = _NLM_F_ACK | (0 if name is not None else _NLM_F_DUMP)
        kind_msg = (_NFNL_SUBSYS_NFTABLES << 8) | _NFT_MSG_GETOBJ
        with self._using() as sock:
            seq, message = self._message(kind_msg, flags, body)
            sock.send(message)
            return self._replies(sock, seq, dump=name is None)

    def batch(self, messages: list[Message]) -> None:
        """Send ``(message type, flags, body)`` messages as one nftables transaction;
        NetlinkError (nothing changed) if the kernel refuses one."""
        begin = struct.pack("!BBH", 0, 0, _NFNL_SUBSYS_NFTABLES)
        framed = [(_NFNL_MSG_BATCH_BEGIN, 0, begin), *messages, (_NFNL_MSG_BATCH_END, 0, begin)]
        with self._using() as sock:
            sent = [self._message(kind, flags, body) for kind, flags, body in framed]
            waiting = {seq for (seq, _), (_, flags, _) in zip(sent, framed, strict=True)
                       if flags & _NLM_F_ACK}  # fmt: skip
            payload = b"".join(message for _, message in sent)
            if len(payload) + 1024 > sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) // 2:
                # One batch is one send: the buffer must hold it (nft grows its own alike).
                sock.setsockopt(socket.SOL_SOCKET, _SO_SNDBUFFORCE, len(payload) + 1024)
            sock.send(payload)
            # The kernel runs the whole batch before send returns: every answer waits.
            while waiting:
                for kind, seq, message in netlink.messages(sock.recv(1 << 16)):
                    if kind == NLMSG_ERROR:
                        if code := error_code(message):
                            self._drain(sock)
                            raise NetlinkError(code, os.strerror(code))
                        waiting.discard(seq)

    @staticmethod
    def _drain(sock: socket.socket) -> None:
        """Drop what else the kernel said about a refused batch."""
        with contextlib.suppress(BlockingIOError):
            while sock.recv(1 << 16, socket.MSG_DONTWAIT):
                pass

    @staticmethod
    def _replies(sock: socket.socket, seq: int, *, dump: bool) -> list[tuple[str, bytes]]:
        found: list[tuple[str, bytes]] = []
        while True:
            for kind, msg_seq, message in netlink.messages(sock.recv(1 << 20)):
                if msg_seq != seq:
                    continue
                if kind == NLMSG_DONE:
                    return found
                if kind == NLMSG_ERROR:
                    code = error_code(message)
                    if code == 0:
                        if not dump:
                            return found
                        continue
                    if code == errno.ENOENT:
                        return found
                    raise NetlinkError(code, os.strerror(code))
                obj_name, obj_data = "", b""
                for attr, payload in attrs(message[4:]):
                    if attr == _NFTA_OBJ_NAME:
                        obj_name = payload.rstrip(b"\0").decode()
                    elif attr == _NFTA_OBJ_DATA:
                        obj_data = payload
                found.append((obj_name, obj_data))


_socket = _Socket()


def _u64(data: bytes, kind: int) -> int:
    for attr, payload in attrs(data):
        if attr == kind:
            return int(struct.unpack("!Q", payload[:8])[0])
    return 0


def _counters(table: str, name: str | None) -> dict[str, int]:
    return {
        obj_name: _u64(data, _NFTA_COUNTER_BYTES)
        for obj_name, data in _socket.request(table, _OBJECT_COUNTER, name)
    }


async def counters(table: str) -> dict[str, int]:
    """Every named counter of ``inet table``, by name (bytes); empty when there is none."""
    return await asyncio.to_thread(_counters, table, None)


async def read_counter(table: str, name: str) -> int | None:
    """The bytes of the named counter; None when it (or the table) does not exist."""
    return (await asyncio.to_thread(_counters, table, name)).get(name)


def _quota(table: str, name: str) -> Quota | None:
    for _, data in _socket.request(table, _OBJECT_QUOTA, name):
        flags = 0
        for attr, payload in attrs(data):
            if attr == _NFTA_QUOTA_FLAGS:
                (flags,) = struct.unpack("!I", payload[:4])
        return Quota(
            limit_bytes=_u64(data, _NFTA_QUOTA_BYTES),
            consumed_bytes=_u64(data, _NFTA_QUOTA_CONSUMED),
            depleted=bool(flags & _QUOTA_F_DEPLETED),
        )
    return None


async def read_quota(table: str, name: str) -> Quota | None:
    """The named quota of ``inet table``; None when it does not exist."""
    return await asyncio.to_thread(_quota, table, name)


def _nested(kind: int, payload: bytes) -> bytes:
    return _attr(kind | _NLA_F_NESTED, payload)


Message = tuple[int, int, bytes]
"""A message of a batch: ``(message type, flags, body)``."""


_MAX_ELEMENTS_BYTES = 60_000
"""Elements per message: an attribute's length is 16 bits, so a long list goes as several
messages of one batch (as libnftnl splits them)."""


def _elements_messages(
    kind: int, table: str, set_name: str, elements: list[bytes]
) -> list[Message]:
    head = struct.pack("!BBH", _NFPROTO_INET, 0, 0)
    head += _attr(_NFTA_SET_ELEM_LIST_TABLE, table.encode() + b"\0")
    head += _attr(_NFTA_SET_ELEM_LIST_SET, set_name.encode() + b"\0")
    flags = _NLM_F_ACK | (_NLM_F_CREATE if kind == _NFT_MSG_NEWSETELEM else 0)
    chunks: list[list[bytes]] = [[]]
    size = 0
    for element in elements:
        if chunks[-1] and size + len(element) > _MAX_ELEMENTS_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(element)
        size += len(element)
    return [
        ((_NFNL_SUBSYS_NFTABLES << 8) | kind, flags,
         head + (_nested(_NFTA_SET_ELEM_LIST_ELEMENTS, b"".join(chunk)) if chunk else b""))
        for chunk in chunks
    ]  # fmt: skip


def _element(key: bytes, *extra: bytes) -> bytes:
    return _nested(_NFTA_LIST_ELEM, _nested(_NFTA_SET_ELEM_KEY, _attr(_NFTA_DATA_VALUE, key))
                   + b"".join(extra))  # fmt: skip


def flush_message(table: str, set_name: str) -> Message:
    """Empty the set (a delete naming no element)."""
    return _elements_messages(_NFT_MSG_DELSETELEM, table, set_name, [])[0]


def keys_message(table: str, set_name: str, keys: list[bytes], *, add: bool) -> list[Message]:
    """Add (or delete) elements by their keys (as the kernel holds them): one message, or
    several for a long list (all of one batch)."""
    kind = _NFT_MSG_NEWSETELEM if add else _NFT_MSG_DELSETELEM
    return _elements_messages(kind, table, set_name, [_element(key) for key in keys])


def ranges_message(table: str, set_name: str, ranges: list[tuple[bytes, bytes]]) -> list[Message]:
    """Add ``(first key, last key)`` ranges to a set of concatenated intervals (one
    message, or several for a long list)."""
    elements = [_element(first, _nested(_NFTA_SET_ELEM_KEY_END, _attr(_NFTA_DATA_VALUE, last)))
                for first, last in ranges]  # fmt: skip
    return _elements_messages(_NFT_MSG_NEWSETELEM, table, set_name, elements)


async def batch(messages: list[Message]) -> None:
    """Apply ``messages`` as one nftables transaction; NetlinkError (and nothing changed)
    if the kernel refuses one of them."""
    await asyncio.to_thread(_socket.batch, messages)


def _add_timed(table: str, set_name: str, keys: list[bytes], timeout_ms: int, comment: str) -> None:
    note = comment.encode()[:120] + b"\0"
    userdata = struct.pack("=BB", _UDATA_SET_ELEM_COMMENT, len(note)) + note
    timed = [_element(key, _attr(_NFTA_SET_ELEM_TIMEOUT, struct.pack("!Q", timeout_ms)),
                      _attr(_NFTA_SET_ELEM_USERDATA, userdata)) for key in keys]  # fmt: skip
    add = _elements_messages(_NFT_MSG_NEWSETELEM, table, set_name, timed)
    delete = keys_message(table, set_name, keys, add=False)
    _socket.batch([*add, *delete, *add])


async def add_timed_elements(
    table: str, set_name: str, keys: list[bytes], timeout_ms: int, comment: str
) -> None:
    """Add ``keys`` (each the element's key as the kernel holds it: an IPv4 address's 4
    bytes, or with a port, the address then the port in 2 bytes and 2 of padding) to the
    timeout set ``set_name`` of ``inet table``, to expire after ``timeout_ms``, with
    ``comment``; an element already there has its timeout and comment renewed (added,
    deleted and added again, in one transaction). NetlinkError if the kernel refuses."""
    await asyncio.to_thread(_add_timed, table, set_name, keys, timeout_ms, comment)
