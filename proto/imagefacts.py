"""What an image file is, decided from facts read off it (pure): raw, qcow2 or ISO 9660, or a
typed refusal with the reason.

The facts come from servicekit.imagefile: the file's size, its first bytes, and what ``qemu-img
info``/``check``/``map`` said. Nothing here is guessed: a qcow2 is what its header and qemu-img
say; an ISO is what its primary volume descriptor says, and it must be as long as its volume
space; a raw disk shows a boot sector, a partition table or a filesystem, or the user says
``--format raw``. A qcow2 naming another file (backing file, external data file) is refused before
qemu-img opens it: the store has no chain, and a node must never follow one to a host file.
"""

from __future__ import annotations

import base64
import binascii
import enum
import struct

import msgspec

from proto.errors import ApiError, Code

SECTOR = 512
# The first bytes read: the qcow2 header and its backing file name, the ISO 9660 primary volume
# descriptor (sector 16 of 2048 bytes) and the filesystem superblocks looked for below.
HEAD_BYTES = 0x11000
QCOW2_MAGIC = b"QFI\xfb"
ISO_PVD = 0x8000  # the primary volume descriptor: type 1, then "CD001"
FORMAT_HEADER = "Virtbus-Image-Format"
VIRTUAL_SIZE_HEADER = "Virtbus-Image-Virtual-Size"


class Format(enum.StrEnum):
    RAW = "raw"
    QCOW2 = "qcow2"
    ISO = "iso"


class Refusal(enum.StrEnum):
    EMPTY = "Empty"
    UNKNOWN = "UnknownContent"
    UNSUPPORTED = "UnsupportedFormat"
    CORRUPT = "Corrupt"
    TRUNCATED = "Truncated"
    BACKING_FILE = "BackingFile"
    MISMATCH = "FormatMismatch"


class ImageRefused(ApiError):
    """An image file that is not stored (or not used, on a node), and why."""

    def __init__(self, reason: Refusal, message: str) -> None:
        super().__init__(Code.INVALID, message, "file")
        self.reason = reason


class QemuInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What ``qemu-img info --output=json`` said."""

    format: str
    virtual_size: int
    backing_file: str | None = None
    data_file: str | None = None
    encrypted: bool = False
    corrupt: bool = False


class Probe(msgspec.Struct, frozen=True, kw_only=True):
    """Facts read from one file. info_error: qemu-img info's complaint when it could not read it;
    check_error: qemu-img check's (None: no corruption found, or not checked); data_end: where the
    last data cluster of a qcow2 ends in the file, from qemu-img map (None: not mapped)."""

    size: int
    head: bytes
    info: QemuInfo | None = None
    info_error: str | None = None
    check_error: str | None = None
    data_end: int | None = None


class ImageFacts(msgspec.Struct, frozen=True, kw_only=True):
    format: Format
    size: int  # bytes of the file (what the store holds)
    virtual_size: int  # bytes the guest sees
    sha256: str | None = None  # hex, once computed


def screen(size: int, head: bytes) -> None:
    """Refusals decided before qemu-img opens the file (it would follow a backing file)."""
    if size == 0:
        raise ImageRefused(Refusal.EMPTY, "the file is empty")
    backing = qcow2_backing(head)
    if backing is not None:
        raise ImageRefused(Refusal.BACKING_FILE, f"the qcow2 image has a backing file ({backing!r}); the image "
                           "store keeps whole images, no chains: flatten it first with "
                           "qemu-img convert -O qcow2 IMAGE FLAT.qcow2")
    if _qcow2_incompatible(head) & 0b100:
        raise ImageRefused(Refusal.BACKING_FILE, "the qcow2 image keeps its data in an external data file; "
                           "convert it to a self-contained image first (qemu-img convert -O qcow2)")


def verdict(probe: Probe, wanted: Format | None = None) -> ImageFacts:
    """What the file is, or ImageRefused. wanted: the user's --format, which must agree."""
    screen(probe.size, probe.head)
    info = probe.info
    if info is None:
        raise ImageRefused(Refusal.CORRUPT, f"qemu-img cannot read it: {probe.info_error or 'no reason given'}")
    if info.format == Format.QCOW2:
        _check_qcow2(probe, info)
        facts = ImageFacts(format=Format.QCOW2, size=probe.size, virtual_size=info.virtual_size)
    elif info.format == Format.RAW:
        facts = _raw_or_iso(probe, wanted)
    else:
        raise ImageRefused(Refusal.UNSUPPORTED, f"qemu-img reads it as {info.format}; the store takes raw, qcow2 "
                           "and ISO images: convert it first (qemu-img convert -O qcow2)")
    if wanted is not None and wanted != facts.format:
        raise ImageRefused(Refusal.MISMATCH, f"--format {wanted} was given, but the file is {describe(facts.format)}")
    return facts


def node_format(probe: Probe, recorded: Format | None) -> str:
    """The format a node gives QEMU for its cached copy: ``qcow2`` or ``raw`` (an ISO is raw bytes).
    Decided from the file again, never from the metadata (anyone's writing); metadata that says
    otherwise is a refusal, not a hint."""
    screen(probe.size, probe.head)
    info = probe.info
    if info is None:
        raise ImageRefused(Refusal.CORRUPT, f"qemu-img cannot read the image: {probe.info_error or 'no reason'}")
    if info.format == Format.QCOW2:
        _check_qcow2(probe, info)
        found = Format.QCOW2
    elif info.format == Format.RAW:
        found = Format.ISO if iso_volume(probe.head) is not None else Format.RAW
    else:
        raise ImageRefused(Refusal.UNSUPPORTED, f"image format {info.format!r} is not supported (raw, qcow2 or ISO)")
    if recorded is not None and recorded != found:
        raise ImageRefused(Refusal.MISMATCH, f"the image was stored as {recorded}, but the node's copy is {found}")
    return "qcow2" if found is Format.QCOW2 else "raw"


def _check_qcow2(probe: Probe, info: QemuInfo) -> None:
    if info.backing_file:
        raise ImageRefused(Refusal.BACKING_FILE, f"the qcow2 image has a backing file ({info.backing_file!r}); "
                           "flatten it first with qemu-img convert -O qcow2")
    if info.data_file:
        raise ImageRefused(Refusal.BACKING_FILE, f"the qcow2 image keeps its data in {info.data_file!r}; "
                           "convert it to a self-contained image first")
    if info.encrypted:
        raise ImageRefused(Refusal.UNSUPPORTED, "the qcow2 image is encrypted; virtbus has no key for it")
    if info.corrupt:
        raise ImageRefused(Refusal.CORRUPT, "the qcow2 image is marked corrupt (qemu-img check -r all may repair it)")
    if probe.check_error is not None:
        cut = "end of the file" in probe.check_error
        raise ImageRefused(Refusal.TRUNCATED if cut else Refusal.CORRUPT,
                           f"the qcow2 image is {'truncated' if cut else 'corrupt'}; qemu-img check: "
                           f"{probe.check_error}")
    if probe.data_end is not None and probe.data_end > probe.size:
        raise ImageRefused(Refusal.TRUNCATED, f"the qcow2 image is truncated: the file has {probe.size} bytes, "
                           f"its data clusters reach byte {probe.data_end}")


def _raw_or_iso(probe: Probe, wanted: Format | None) -> ImageFacts:
    iso = iso_volume(probe.head)
    if iso is not None:
        blocks, block = iso
        if probe.size < blocks * block:
            raise ImageRefused(Refusal.TRUNCATED, f"the ISO 9660 image is truncated: its volume is {blocks} blocks "
                               f"of {block} bytes ({blocks * block} bytes), the file has {probe.size}")
        return ImageFacts(format=Format.ISO, size=probe.size, virtual_size=probe.size)
    if probe.size % SECTOR:
        raise ImageRefused(Refusal.UNKNOWN, f"the file has {probe.size} bytes, not whole {SECTOR}-byte sectors: "
                           "not a disk image (truncated?)")
    if wanted is None and disk_signature(probe.head) is None:
        raise ImageRefused(Refusal.UNKNOWN, "nothing in the file says what it is: not qcow2, no ISO 9660 volume "
                           "descriptor, no boot sector, partition table or filesystem at its start; if it is a "
                           "raw disk image, say so with --format raw")
    return ImageFacts(format=Format.RAW, size=probe.size, virtual_size=probe.size)


def describe(fmt: Format) -> str:
    return {Format.RAW: "a raw disk image", Format.QCOW2: "a qcow2 image", Format.ISO: "an ISO 9660 image"}[fmt]


def qcow2_backing(head: bytes) -> str | None:
    """The backing file a qcow2 header names, if any (the bytes must reach the name)."""
    if len(head) < 20 or head[:4] != QCOW2_MAGIC:
        return None
    offset, length = struct.unpack_from(">QI", head, 8)
    if offset == 0 or length == 0:
        return None
    name = head[offset:offset + length] if offset + length <= len(head) else b""
    return name.decode(errors="replace") or f"<{length} bytes at offset {offset}>"


def _qcow2_incompatible(head: bytes) -> int:
    if len(head) < 80 or head[:4] != QCOW2_MAGIC or struct.unpack_from(">I", head, 4)[0] < 3:
        return 0
    return int(struct.unpack_from(">Q", head, 72)[0])


def iso_volume(head: bytes) -> tuple[int, int] | None:
    """(volume space size in blocks, logical block size) of an ISO 9660 primary volume descriptor."""
    pvd = head[ISO_PVD:ISO_PVD + 136]
    if len(pvd) < 136 or pvd[0] != 1 or pvd[1:6] != b"CD001":
        return None
    blocks = struct.unpack_from("<I", pvd, 80)[0]  # both-endian fields: the little-endian half
    block = struct.unpack_from("<H", pvd, 128)[0]
    return (blocks, block) if blocks and block else None


# (offset, magic, what): the first sectors of a disk or filesystem a raw image may start with
_SIGNATURES = (
    (510, b"\x55\xaa", "boot sector or partition table"),
    (512, b"EFI PART", "GPT partition table"),
    (1080, b"\x53\xef", "ext2/3/4 filesystem"),
    (0, b"XFSB", "XFS filesystem"),
    (0x10040, b"_BHRfS_M", "btrfs filesystem"),
    (512, b"LABELONE", "LVM physical volume"),
    (0, b"hsqs", "squashfs"),
    (4086, b"SWAPSPACE2", "swap space"),
)


def disk_signature(head: bytes) -> str | None:
    for offset, magic, what in _SIGNATURES:
        if head[offset:offset + len(magic)] == magic:
            return what
    return None


def metadata_headers(facts: ImageFacts) -> dict[str, list[str]]:
    """The object's headers, as NATS object stores keep them (each a list, as Go's nats.Header)."""
    return {FORMAT_HEADER: [facts.format.value], VIRTUAL_SIZE_HEADER: [str(facts.virtual_size)]}


def recorded(headers: object) -> tuple[Format | None, int | None]:
    """Format and virtual size an object's headers claim; anything malformed reads as unknown."""
    if not isinstance(headers, dict):
        return None, None

    def one(key: str) -> str | None:
        value = headers.get(key)
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        return value if isinstance(value, str) else None

    fmt_text, size_text = one(FORMAT_HEADER), one(VIRTUAL_SIZE_HEADER)
    fmt = Format(fmt_text) if fmt_text in {f.value for f in Format} else None
    size = int(size_text) if size_text is not None and size_text.isdigit() and len(size_text) <= 20 else None
    return fmt, size


def sha256_hex(digest: str | None) -> str | None:
    """An object store digest (``SHA-256=<base64url>``) as the hex sha256sum prints; None if not one."""
    algorithm, _, encoded = (digest or "").partition("=")
    if algorithm.upper() != "SHA-256":
        return None
    try:
        raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (ValueError, binascii.Error):
        return None
    return raw.hex() if len(raw) == 32 else None
