"""The qcow2 overlay's layout (launcher.overlay), pure: what qemu-img would write for an image's size,
and a typed refusal for every shape it does not write (the launcher then asks qemu-img)."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from launcher.overlay import CLUSTER, OverlayError, overlay_layout

GiB = 1 << 30


def header_fields(pieces: list[tuple[int, bytes]]) -> tuple[Any, ...]:
    offset, header = pieces[0]
    assert offset == 0
    return struct.unpack_from(">4sIQIIQIIQQIIQQQQII", header)


def test_a_small_image_gets_one_l1_entry_and_four_clusters() -> None:
    pieces, length = overlay_layout("/cache/ab/cd.img", "raw", 4 << 20)
    (magic, version, name_at, name_len, bits, size, crypt, l1_size, l1_at, rt_at, rt_clusters,
     *_rest, refcount_order, header_length) = header_fields(pieces)
    assert (magic, version, bits, size, crypt) == (b"QFI\xfb", 3, 16, 4 << 20, 0)
    assert (l1_size, l1_at, rt_at, rt_clusters) == (1, 3 * CLUSTER, CLUSTER, 1)
    assert (refcount_order, header_length) == (4, 112)
    assert length == 3 * CLUSTER + 8  # as qemu-img's own overlay: the L1 table's one entry ends it
    header = pieces[0][1]
    assert header[name_at:name_at + name_len] == b"/cache/ab/cd.img"
    assert b"raw" in header[112:name_at]  # the backing format's header extension
    assert pieces[1] == (CLUSTER, struct.pack(">Q", 2 * CLUSTER))  # refcount table -> its one block
    assert pieces[2] == (2 * CLUSTER, struct.pack(">4H", 1, 1, 1, 1))


@pytest.mark.parametrize(("size", "entries"), [(512, 1), (512 << 20, 1), ((512 << 20) + 512, 2), (GiB, 2),
                                                (4096 * GiB, 8192)])
def test_the_l1_table_maps_the_whole_image(size: int, entries: int) -> None:
    pieces, length = overlay_layout("/i.img", "qcow2", size)
    assert header_fields(pieces)[7] == entries
    assert length == 3 * CLUSTER + 8 * entries


@pytest.mark.parametrize(("backing", "fmt", "size", "why"), [
    ("/i.img", "vmdk", GiB, "format"),
    ("/i.img", "raw", 0, "size"),
    ("/i.img", "raw", 1000, "size"),  # qemu-img rounds this one: it makes it
    ("/i.img", "raw", 4096 * GiB + 512, "L1"),
    ("", "raw", GiB, "name"),
    ("/x" * 600, "raw", GiB, "name"),
    ("/a\0b", "raw", GiB, "name"),
])
def test_shapes_it_does_not_write_are_refused(backing: str, fmt: str, size: int, why: str) -> None:
    with pytest.raises(OverlayError, match=why):
        overlay_layout(backing, fmt, size)
