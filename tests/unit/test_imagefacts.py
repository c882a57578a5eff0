"""What an uploaded file is, judged on small real files: made by qemu-img, mkfs and genisoimage,
then cut, chained or garbled as a user's file would be."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from proto.imagefacts import (
    Format,
    ImageFacts,
    ImageRefused,
    Refusal,
    disk_signature,
    iso_volume,
    metadata_headers,
    qcow2_backing,
    recorded,
    sha256_hex,
)
from servicekit.imagefile import inspect, usable_format

MiB = 1 << 20


def run(*cmd: str, cwd: Path | None = None) -> None:
    subprocess.run(cmd, check=True, capture_output=True, cwd=cwd)


@pytest.fixture
def fat_disk(tmp_path: Path) -> Path:
    """A raw disk as the test guest's: a FAT filesystem (boot sector signature), 4 MiB."""
    path = tmp_path / "disk.img"
    run("mkfs.vfat", "-C", "-n", "TEST", str(path), "4096")
    return path


@pytest.fixture
def qcow2(tmp_path: Path, fat_disk: Path) -> Path:
    path = tmp_path / "disk.qcow2"
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(fat_disk), str(path))
    return path


@pytest.fixture
def iso(tmp_path: Path) -> Path:
    src = tmp_path / "isosrc"
    src.mkdir()
    (src / "hello.txt").write_bytes(os.urandom(300_000))
    path = tmp_path / "cd.iso"
    run("genisoimage", "-quiet", "-o", str(path), "-V", "TESTCD", str(src))
    return path


def cut(path: Path, size: int) -> Path:
    out = path.with_name(f"cut-{size}-{path.name}")
    out.write_bytes(path.read_bytes()[:size])
    return out


def refused(path: Path, wanted: Format | None = None) -> ImageRefused:
    with pytest.raises(ImageRefused) as caught:
        inspect(path, wanted)
    return caught.value


def test_a_raw_disk_with_a_filesystem_is_raw(fat_disk: Path) -> None:
    assert inspect(fat_disk, None) == ImageFacts(format=Format.RAW, size=4 * MiB, virtual_size=4 * MiB)
    assert inspect(fat_disk, Format.RAW).format is Format.RAW
    assert usable_format(fat_disk, Format.RAW) == "raw"


def test_a_qcow2_is_qcow2_with_its_virtual_size(qcow2: Path) -> None:
    facts = inspect(qcow2, None)
    assert facts.format is Format.QCOW2 and facts.virtual_size == 4 * MiB
    assert facts.size == qcow2.stat().st_size < 4 * MiB
    assert usable_format(qcow2, Format.QCOW2) == "qcow2"


def test_an_iso_is_iso_and_a_node_uses_it_as_raw(iso: Path) -> None:
    facts = inspect(iso, None)
    assert facts.format is Format.ISO and facts.virtual_size == facts.size == iso.stat().st_size
    blocks, block = iso_volume(iso.read_bytes()[:0x11000]) or (0, 0)
    assert block == 2048 and blocks * block == iso.stat().st_size
    assert usable_format(iso, Format.ISO) == "raw"
    assert inspect(iso, Format.ISO).format is Format.ISO


def test_a_truncated_iso_is_refused_with_the_numbers(iso: Path) -> None:
    short = cut(iso, iso.stat().st_size - 2048)
    error = refused(short)
    assert error.reason is Refusal.TRUNCATED
    assert f"({iso.stat().st_size} bytes), the file has {short.stat().st_size}" in error.message, error.message


def test_a_qcow2_cut_anywhere_is_refused_as_truncated(qcow2: Path) -> None:
    size = qcow2.stat().st_size
    for length in (size - 1000, size - 65536 - 100, size // 3, 65536 + 100):
        error = refused(cut(qcow2, length))
        assert error.reason is Refusal.TRUNCATED, (length, error.message)
        assert "truncated" in error.message


def test_a_qcow2_whose_header_lies_is_refused_with_qemu_imgs_reason(qcow2: Path, tmp_path: Path) -> None:
    data = bytearray(qcow2.read_bytes())
    data[20:24] = (3).to_bytes(4, "big")  # cluster_bits 3: qemu-img refuses such a header
    bad = tmp_path / "bad.qcow2"
    bad.write_bytes(bytes(data))
    error = refused(bad)
    assert error.reason is Refusal.CORRUPT and "qemu-img cannot read it" in error.message, error.message
    assert "cluster size" in error.message.lower(), error.message


def test_a_qcow2_with_a_backing_file_is_refused_naming_it(fat_disk: Path, tmp_path: Path) -> None:
    overlay = tmp_path / "overlay.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", str(fat_disk), "-F", "raw", str(overlay))
    error = refused(overlay)
    assert error.reason is Refusal.BACKING_FILE and str(fat_disk) in error.message, error.message
    assert qcow2_backing(overlay.read_bytes()[:0x11000]) == str(fat_disk)
    with pytest.raises(ImageRefused):  # nor does a node ever hand it to QEMU
        usable_format(overlay, None)


def test_a_qcow2_with_an_external_data_file_is_refused(tmp_path: Path) -> None:
    image = tmp_path / "ext.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o", f"data_file={tmp_path / 'data.raw'}", str(image), "1M")
    assert refused(image).reason is Refusal.BACKING_FILE


def test_random_bytes_and_empty_files_are_refused(tmp_path: Path) -> None:
    noise = tmp_path / "noise.bin"
    noise.write_bytes(b"\x01" + os.urandom(MiB - 1))
    error = refused(noise)
    assert error.reason is Refusal.UNKNOWN and "--format raw" in error.message
    assert inspect(noise, Format.RAW).format is Format.RAW  # the user says so: theirs to say
    odd = tmp_path / "odd.bin"
    odd.write_bytes(os.urandom(1000))
    assert refused(odd, Format.RAW).reason is Refusal.UNKNOWN  # not whole sectors: no disk
    empty = tmp_path / "empty.img"
    empty.touch()
    assert refused(empty).reason is Refusal.EMPTY


def test_a_format_that_disagrees_is_refused_never_guessed(qcow2: Path, fat_disk: Path, iso: Path) -> None:
    assert refused(qcow2, Format.RAW).reason is Refusal.MISMATCH
    error = refused(fat_disk, Format.QCOW2)
    assert error.reason is Refusal.MISMATCH and "the file is a raw disk image" in error.message
    assert refused(iso, Format.RAW).reason is Refusal.MISMATCH


def test_other_formats_are_refused_naming_them(fat_disk: Path, tmp_path: Path) -> None:
    vmdk = tmp_path / "disk.vmdk"
    run("qemu-img", "convert", "-f", "raw", "-O", "vmdk", str(fat_disk), str(vmdk))
    error = refused(vmdk)
    assert error.reason is Refusal.UNSUPPORTED and "vmdk" in error.message


def test_a_node_refuses_metadata_that_disagrees_with_its_copy(qcow2: Path, fat_disk: Path) -> None:
    with pytest.raises(ImageRefused) as caught:
        usable_format(fat_disk, Format.QCOW2)
    assert caught.value.reason is Refusal.MISMATCH
    assert usable_format(qcow2, None) == "qcow2"  # a `nats object put` image: no metadata, still checked


def test_signatures() -> None:
    assert disk_signature(bytes(510) + b"\x55\xaa") == "boot sector or partition table"
    assert disk_signature(bytes(1080) + b"\x53\xef") == "ext2/3/4 filesystem"
    assert disk_signature(bytes(4096)) is None


def test_metadata_round_trip_and_garbage() -> None:
    facts = ImageFacts(format=Format.QCOW2, size=10, virtual_size=1 << 30)
    assert recorded(metadata_headers(facts)) == (Format.QCOW2, 1 << 30)
    assert recorded({"Virtbus-Image-Format": "iso", "Virtbus-Image-Virtual-Size": "2048"}) == (Format.ISO, 2048)
    assert recorded({"Virtbus-Image-Format": ["vmdk"], "Virtbus-Image-Virtual-Size": ["-1"]}) == (None, None)
    assert recorded(None) == (None, None) and recorded(["x"]) == (None, None)


def test_sha256_hex_of_an_object_digest() -> None:
    assert sha256_hex("SHA-256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU=") == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")  # of b""
    assert sha256_hex("SHA-256=abc") is None and sha256_hex(None) is None and sha256_hex("MD5=x") is None
