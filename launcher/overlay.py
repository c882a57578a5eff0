"""A qcow2 overlay over a node's cached image (or a volume), written here rather than by
``qemu-img create``.

Every launch of a containerDisk VM (and each ephemeral use of a volume) needs one: a fresh, empty
qcow2 (version 3, 64 KiB clusters, 16-bit refcounts) whose reads fall through to the image. It is
four clusters of fixed shape: the header (with the backing file's name and format), a refcount
table, one refcount block counting those four clusters, and an empty L1 table. A qemu-img run to
write them cost ~5 ms of CPU on an idle box (its start and dynamic linking, more under load);
writing them takes well under 1 ms. The layout is qemu-img's own for an image up to 4 TiB (what one
L1 cluster maps); anything larger, a size qemu-img would round, and every other kind of disk are
still made by qemu-img.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from proto.imagefacts import QCOW2_MAGIC

CLUSTER_BITS = 16
CLUSTER = 1 << CLUSTER_BITS
L2_ENTRIES = CLUSTER // 8  # 8-byte entries: each L1 entry maps CLUSTER * L2_ENTRIES bytes (512 MiB)
L1_ENTRIES_MAX = CLUSTER // 8  # one cluster of L1 table: 4 TiB of guest disk
REFCOUNT_ORDER = 4  # 16-bit refcounts, qemu's default
HEADER_LENGTH = 112  # version 3 with the compression type byte (zlib: 0) and its padding
EXT_BACKING_FORMAT = 0xE2792ACA
EXT_END = 0
BACKING_NAME_MAX = 1023  # qemu refuses longer backing file names
FORMATS = ("raw", "qcow2")


class OverlayError(ValueError):
    pass


def _pad8(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 8)


def overlay_layout(backing: str, backing_format: str, virtual_size: int) -> tuple[list[tuple[int, bytes]], int]:
    """Pure: the non-zero pieces of the overlay file as (offset, bytes), and the file's length."""
    if backing_format not in FORMATS:
        raise OverlayError(f"backing format {backing_format!r} is not raw or qcow2")
    name = backing.encode()
    if not name or len(name) > BACKING_NAME_MAX or b"\0" in name:
        raise OverlayError(f"backing file name of {len(name)} bytes cannot be written")
    if virtual_size <= 0 or virtual_size % 512:
        raise OverlayError(f"virtual size {virtual_size} is not a positive multiple of 512")
    l1_entries = -(-virtual_size // (CLUSTER * L2_ENTRIES))
    if l1_entries > L1_ENTRIES_MAX:
        raise OverlayError(f"virtual size {virtual_size} needs more than one L1 cluster")
    refcount_table, refcount_block, l1_table = CLUSTER, 2 * CLUSTER, 3 * CLUSTER
    fmt = backing_format.encode()
    extensions = struct.pack(">II", EXT_BACKING_FORMAT, len(fmt)) + _pad8(fmt) + struct.pack(">II", EXT_END, 0)
    name_offset = HEADER_LENGTH + len(extensions)
    header = struct.pack(
        ">4sIQIIQIIQQIIQQQQII",
        QCOW2_MAGIC, 3,                      # magic, version
        name_offset, len(name),              # backing file name
        CLUSTER_BITS, virtual_size,
        0,                                   # no encryption
        l1_entries, l1_table,
        refcount_table, 1,                   # refcount table: offset, clusters
        0, 0,                                # no snapshots
        0, 0, 0,                             # incompatible, compatible, autoclear features: none
        REFCOUNT_ORDER, HEADER_LENGTH,
    )
    header += b"\0" * (HEADER_LENGTH - len(header))  # compression type zlib (0), padded to 8
    pieces = [
        (0, header + extensions + name),
        (refcount_table, struct.pack(">Q", refcount_block)),
        (refcount_block, struct.pack(">4H", 1, 1, 1, 1)),  # header, refcount table and block, L1 table
    ]
    return pieces, l1_table + 8 * l1_entries


def virtual_size(path: Path, fmt: str) -> int:
    """What the guest sees of the image: a raw file's length, a qcow2 image's size field."""
    with open(path, "rb") as f:
        if fmt == "raw":
            return f.seek(0, os.SEEK_END)
        head = f.read(32)
    if len(head) < 32 or head[:4] != QCOW2_MAGIC:
        raise OverlayError(f"{path.name} is not a qcow2 image")
    return int(struct.unpack_from(">Q", head, 24)[0])


def write_overlay(path: Path, backing: Path, backing_format: str) -> None:
    """The overlay at ``path`` (which must not exist) over ``backing``; OverlayError where the shape
    does not fit (the caller then asks qemu-img)."""
    pieces, length = overlay_layout(str(backing), backing_format, virtual_size(backing, backing_format))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        for offset, data in pieces:
            os.pwrite(fd, data, offset)
        os.ftruncate(fd, length)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)
