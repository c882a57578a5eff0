"""QEMU's screenshots as PNG, pure. libvirt asks QEMU for a PNG where it can (QEMU 7.1 and later)
and for a binary PPM (P6) otherwise: a VGA text screen's 860 KB of PPM pixels are a few KB as PNG,
which fits a NATS reply whatever the guest's resolution is likely to be."""

from __future__ import annotations

import struct
import zlib

from proto.errors import ApiError, Code

SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_PIXELS = 4096 * 4096


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _ppm_fields(ppm: bytes) -> tuple[list[int], int]:
    """The width, height and maxval of a P6 header, and where the pixels start."""
    if not ppm.startswith(b"P6"):
        raise ApiError(Code.INTERNAL, "the screenshot is not a binary PPM (P6)")
    fields: list[int] = []
    pos = 2
    while len(fields) < 3:
        while pos < len(ppm) and ppm[pos:pos + 1].isspace():
            pos += 1
        if ppm[pos:pos + 1] == b"#":  # a comment, to the end of its line
            pos = ppm.find(b"\n", pos) + 1 or len(ppm)
            continue
        start = pos
        while pos < len(ppm) and ppm[pos:pos + 1].isdigit():
            pos += 1
        if start == pos:
            raise ApiError(Code.INTERNAL, "the screenshot's PPM header is cut short")
        fields.append(int(ppm[start:pos]))
    return fields, pos + 1  # one whitespace byte ends the header


def ppm_to_png(ppm: bytes) -> tuple[bytes, int, int]:
    """(png, width, height) of a P6 PPM with 8-bit samples."""
    (width, height, maxval), start = _ppm_fields(ppm)
    if maxval != 255 or not 0 < width * height <= MAX_PIXELS:
        raise ApiError(Code.INTERNAL, f"an unexpected screenshot: {width}x{height}, maxval {maxval}")
    row = width * 3
    pixels = ppm[start:start + row * height]
    if len(pixels) != row * height:
        raise ApiError(Code.INTERNAL, "the screenshot's pixels are cut short")
    raw = b"".join(b"\x00" + pixels[y * row:(y + 1) * row] for y in range(height))  # filter 0 per row
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    png = SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 6)) + _chunk(b"IEND", b"")
    return png, width, height


def as_png(image: bytes) -> tuple[bytes, int, int]:
    """(png, width, height) of a screenshot in either format."""
    if image.startswith(SIGNATURE):
        if image[12:16] != b"IHDR":
            raise ApiError(Code.INTERNAL, "the screenshot is a PNG without its header")
        width, height = struct.unpack(">II", image[16:24])
        return image, width, height
    return ppm_to_png(image)
