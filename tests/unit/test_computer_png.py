"""Screenshots from an Xvfb framebuffer file: XWD parsed, PNG written (decoded back here
with zlib to check every pixel landed where it belongs, in the right colours)."""

from __future__ import annotations

import struct
import zlib

import pytest

from hutch.core.computer_png import FramebufferError, Region, parse_xwd, png


def xwd(width: int, height: int, pixel: object, *, pad: int = 0, ncolors: int = 0) -> bytes:
    """An XWD file as Xvfb -fbdir writes one: a big-endian header, a colour map, then
    B G R X pixels (LSB first), ``pad`` extra bytes on each line."""
    name = b"Xvfb main window\0"
    header_size = 100 + len(name)
    stride = width * 4 + pad
    fields = [header_size, 7, 2, 24, width, height, 0, 0, 32, 0, 32, 32, stride, 4,
              0xFF0000, 0xFF00, 0xFF, 8, 256, ncolors, width, height, 0, 0, 0]  # fmt: skip
    body = bytearray()
    for y in range(height):
        for x in range(width):
            r, g, b = pixel(x, y)  # type: ignore[operator]
            body += bytes((b, g, r, 0))
        body += b"\xee" * pad
    return struct.pack(">25I", *fields) + name + b"\0" * (12 * ncolors) + bytes(body)


def decode(data: bytes) -> tuple[int, int, list[list[tuple[int, int, int]]]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    at, idat, width, height = 8, b"", 0, 0
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at : at + 8])
        body = data[at + 8 : at + 8 + length]
        assert struct.unpack(">I", data[at + 8 + length : at + 12 + length])[0] == zlib.crc32(
            kind + body
        )
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert (depth, colour) == (8, 2)
        elif kind == b"IDAT":
            idat += body
        at += 12 + length
    raw = zlib.decompress(idat)
    rows = []
    for y in range(height):
        line = raw[y * (width * 3 + 1) : (y + 1) * (width * 3 + 1)]
        assert line[0] == 0
        rows.append([tuple(line[1 + x * 3 : 4 + x * 3]) for x in range(width)])
    return width, height, rows  # type: ignore[return-value]


def colour(x: int, y: int) -> tuple[int, int, int]:
    return (x * 10 % 256, y * 20 % 256, (x + y) % 256)


@pytest.mark.parametrize("pad", [0, 8])
def test_the_whole_screen_in_its_colours(pad: int) -> None:
    fb = parse_xwd(xwd(13, 7, colour, pad=pad, ncolors=3))
    width, height, rows = decode(png(fb))
    assert (width, height) == (13, 7)
    assert rows == [[colour(x, y) for x in range(13)] for y in range(7)]


def test_a_region() -> None:
    fb = parse_xwd(xwd(20, 10, colour))
    width, height, rows = decode(png(fb, Region(x=5, y=3, width=4, height=2)))
    assert (width, height) == (4, 2)
    assert rows == [[colour(x, y) for x in range(5, 9)] for y in range(3, 5)]


def test_a_region_off_the_screen_is_refused() -> None:
    fb = parse_xwd(xwd(20, 10, colour))
    with pytest.raises(ValueError, match="outside"):
        png(fb, Region(x=15, y=0, width=10, height=2))


def test_what_is_not_a_framebuffer() -> None:
    with pytest.raises(FramebufferError):
        parse_xwd(b"not an xwd")
    whole = xwd(4, 4, colour)
    with pytest.raises(FramebufferError, match="smaller"):
        parse_xwd(whole[:-10])
    wrong = bytearray(whole)
    wrong[44:48] = struct.pack(">I", 16)  # 16 bits a pixel
    with pytest.raises(FramebufferError, match="16 bits"):
        parse_xwd(bytes(wrong))
