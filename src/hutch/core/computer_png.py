"""Screenshots: an Xvfb framebuffer (an XWD file, ``Xvfb -fbdir``) to PNG bytes.

Standard library only, and no per-pixel Python: the colour channels are moved with
extended slices and the rows compressed with zlib, so a 1280x800 screen takes a few
milliseconds (``bench/computer.py``).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

__all__ = ["Framebuffer", "FramebufferError", "Region", "parse_xwd", "png"]

_HEADER = struct.Struct(">25I")
_COLOR_BYTES = 12  # an XWDColor: pixel CARD32, red/green/blue CARD16, flags, pad
# zlib's fastest level: a desktop is mostly flat colour, and this is 3-4x faster than 6
# for PNGs a fifth larger.
PNG_LEVEL = 1


class FramebufferError(Exception):
    """The file is not an XWD image this module reads (24/32-bit TrueColor, ZPixmap)."""


@dataclass(frozen=True, kw_only=True)
class Region:
    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True)
class Framebuffer:
    width: int
    height: int
    stride: int
    offset: int
    red_first: bool
    """Pixels are X R G B in memory (MSB first); else B G R X."""
    data: bytes


def parse_xwd(data: bytes) -> Framebuffer:
    """The pixel layout of an XWD file ``data`` (its header is big-endian, as Xvfb writes
    it on any machine). Raises :class:`FramebufferError` for anything else."""
    if len(data) < _HEADER.size:
        raise FramebufferError("the framebuffer is shorter than an XWD header")
    fields = _HEADER.unpack_from(data)
    header_size, version, pixmap_format = fields[0], fields[1], fields[2]
    width, height, byte_order, bits_per_pixel, stride = (
        fields[4], fields[5], fields[7], fields[11], fields[12])  # fmt: skip
    ncolors = fields[19]
    if version != 7 or pixmap_format != 2 or bits_per_pixel != 32:
        raise FramebufferError(
            f"unsupported framebuffer (XWD version {version}, format {pixmap_format}, "
            f"{bits_per_pixel} bits a pixel)"
        )
    offset = header_size + ncolors * _COLOR_BYTES
    if width < 1 or height < 1 or stride < width * 4 or len(data) < offset + stride * height:
        raise FramebufferError("the framebuffer is smaller than its header says")
    return Framebuffer(width=width, height=height, stride=stride, offset=offset,
                       red_first=byte_order == 1, data=data)  # fmt: skip


def png(fb: Framebuffer, region: Region | None = None) -> bytes:
    """The PNG (8-bit RGB) of ``region`` of ``fb`` (all of it when None). The region
    must lie within the framebuffer (ValueError otherwise)."""
    region = region or Region(x=0, y=0, width=fb.width, height=fb.height)
    inside = (
        region.width >= 1 and region.height >= 1 and region.x >= 0 and region.y >= 0
        and region.x + region.width <= fb.width and region.y + region.height <= fb.height
    )  # fmt: skip
    if not inside:
        raise ValueError("the region is outside the screen")
    w, h = region.width, region.height
    start = fb.offset + region.y * fb.stride
    if region.x == 0 and w == fb.width and fb.stride == w * 4:
        pixels = fb.data[start : start + h * fb.stride]
    else:
        left = region.x * 4
        pixels = b"".join(
            fb.data[row + left : row + left + w * 4]
            for row in range(start, start + h * fb.stride, fb.stride)
        )
    rgb = bytearray(w * h * 3)
    red, green, blue = (1, 2, 3) if fb.red_first else (2, 1, 0)
    rgb[0::3] = pixels[red::4]
    rgb[1::3] = pixels[green::4]
    rgb[2::3] = pixels[blue::4]
    line = w * 3
    # Each row starts with its filter type, 0 (none).
    raw = bytearray(h * (line + 1))
    view = memoryview(rgb)
    for row in range(h):
        at = row * (line + 1)
        raw[at + 1 : at + 1 + line] = view[row * line : (row + 1) * line]
    return b"".join((
        b"\x89PNG\r\n\x1a\n",
        _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)),
        _chunk(b"IDAT", zlib.compress(raw, PNG_LEVEL)),
        _chunk(b"IEND", b""),
    ))  # fmt: skip


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
