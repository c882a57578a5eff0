"""QEMU's PPM screenshots as PNG (launcher.png), read back with a tiny decoder."""

import struct
import zlib

import pytest

from launcher.png import SIGNATURE, as_png, ppm_to_png
from proto.errors import ApiError


def decode_png_rgb(png: bytes) -> tuple[int, int, bytes]:
    """(width, height, RGB bytes) of an 8-bit RGB or RGBA PNG, any row filters (Chromium's too)."""
    assert png.startswith(SIGNATURE)
    pos, idat, width, height, colour = 8, b"", 0, 0, 2
    while pos < len(png):
        (n,), kind = struct.unpack(">I", png[pos:pos + 4]), png[pos + 4:pos + 8]
        body = png[pos + 8:pos + 8 + n]
        assert struct.unpack(">I", png[pos + 8 + n:pos + 12 + n])[0] == zlib.crc32(kind + body)
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    bpp = 3 if colour == 2 else 4
    stride = width * bpp
    raw = zlib.decompress(idat)
    out = bytearray()
    prev = bytearray(stride)
    for y in range(height):
        filt, row = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = row[i - bpp] if i >= bpp else 0
            b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
            if filt == 1:
                row[i] = (row[i] + a) & 0xFF
            elif filt == 2:
                row[i] = (row[i] + b) & 0xFF
            elif filt == 3:
                row[i] = (row[i] + (a + b) // 2) & 0xFF
            elif filt == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                row[i] = (row[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        out += row if bpp == 3 else b"".join(row[i:i + 3] for i in range(0, stride, 4))
        prev = row
    return width, height, bytes(out)


def test_a_ppm_becomes_the_same_pixels_as_png() -> None:
    pixels = bytes(range(256)) * 3 * 2  # 4x...: 1536 bytes = 32x16 pixels
    ppm = b"P6\n# by QEMU\n32 16\n255\n" + pixels
    png, w, h = ppm_to_png(ppm)
    assert (w, h) == (32, 16)
    assert decode_png_rgb(png) == (32, 16, pixels)


@pytest.mark.parametrize("bad", [b"P3\n1 1\n255\n000", b"P6\n2 2\n255\n" + b"\x00" * 5,
                                 b"P6\n1 1\n65535\n" + b"\x00" * 6, b"P6\n", b"P6\n0 0\n255\n"])
def test_anything_else_is_a_typed_error(bad: bytes) -> None:
    with pytest.raises(ApiError):
        ppm_to_png(bad)


def test_a_png_from_qemu_passes_as_it_is() -> None:
    png, _, _ = ppm_to_png(b"P6\n3 5\n255\n" + bytes(45))
    assert as_png(png) == (png, 3, 5)
    with pytest.raises(ApiError):
        as_png(SIGNATURE + b"junk")
