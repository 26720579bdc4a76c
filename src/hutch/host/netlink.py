"""What every netlink family here shares: the message header and the attribute walk.

A reply (``recv``) holds one or more messages, each a 16-byte ``nlmsghdr`` (length, type,
flags, sequence, port id) then its payload, padded to 4 bytes; a payload's attributes are
(length, type) headers and values, padded the same way. Used by :mod:`hutch.host.nfnetlink`
(nf_tables), :mod:`hutch.host.conntrack` (ctnetlink).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

__all__ = ["NLMSG_DONE", "NLMSG_ERROR", "attrs", "error_code", "messages"]

NLMSG_ERROR, NLMSG_DONE = 2, 3
_NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER


def messages(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """``(type, sequence, payload)`` of each whole message in ``data`` (one ``recv``)."""
    offset = 0
    while offset + 16 <= len(data):
        length, kind, _, seq, _ = struct.unpack_from("=IHHII", data, offset)
        yield kind, seq, data[offset + 16 : offset + length]
        offset += (length + 3) & ~3


def error_code(payload: bytes) -> int:
    """The errno of an ``NLMSG_ERROR`` message's payload, positive (0 is an ack)."""
    (code,) = struct.unpack_from("=i", payload)
    return int(-code)


def attrs(data: bytes) -> Iterator[tuple[int, bytes]]:
    """``(type, value)`` of each attribute in ``data``, its flags cleared."""
    offset = 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            return
        yield kind & _NLA_TYPE_MASK, data[offset + 4 : offset + length]
        offset += (length + 3) & ~3
