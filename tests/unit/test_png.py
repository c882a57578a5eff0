"""QEMU's PPM screenshots as PNG (launcher.png), read back with a tiny decoder."""

import struct
import zlib

import pytest

from launcher.png import SIGNATURE, ppm_to_png
from proto.errors import ApiError


def decode_png_rgb(png: bytes) -> tuple[int, int, bytes]:
    assert png.startswith(SIGNATURE)
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(png):
        (n,), kind = struct.unpack(">I", png[pos:pos + 4]), png[pos + 4:pos + 8]
        body = png[pos + 8:pos + 8 + n]
        assert struct.unpack(">I", png[pos + 8 + n:pos + 12 + n])[0] == zlib.crc32(kind + body)
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = zlib.decompress(idat)
    rows = [raw[y * (width * 3 + 1):(y + 1) * (width * 3 + 1)] for y in range(height)]
    assert all(r[0] == 0 for r in rows)
    return width, height, b"".join(r[1:] for r in rows)


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
