"""The launcher's qcow2 overlays, checked by QEMU's own tools: qemu-img finds no error, reads the
image through the overlay, writes land in the overlay and never in the image. And the format the
node read of a cached image is kept on it, so a launch runs no qemu-img at all."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from launcher import disks
from launcher.overlay import write_overlay
from proto.spec import ContainerDisk, Disk, VMSpec, Volume
from servicekit.store import Store


def run(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, check=True, text=True).stdout


def raw_image(path: Path, size: int) -> bytes:
    content = bytes((i * 7 + i // 4096) % 251 for i in range(size))
    path.write_bytes(content)
    return content


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_qemu_reads_the_image_through_the_overlay_and_writes_only_to_it(tmp_path: Path, fmt: str) -> None:
    content = raw_image(tmp_path / "base.raw", 3 << 20)
    base = tmp_path / "base.raw"
    if fmt == "qcow2":
        run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(base), str(tmp_path / "base.qcow2"))
        base = tmp_path / "base.qcow2"
    before = base.read_bytes()
    overlay = tmp_path / "disk.qcow2"
    write_overlay(overlay, base, fmt)
    assert "No errors were found" in run("qemu-img", "check", str(overlay))
    info = json.loads(run("qemu-img", "info", "--output=json", str(overlay)))
    assert (info["format"], info["virtual-size"]) == ("qcow2", 3 << 20)
    assert (info["full-backing-filename"], info["backing-filename-format"]) == (str(base), fmt)
    run("qemu-img", "convert", "-O", "raw", str(overlay), str(tmp_path / "seen.raw"))
    assert (tmp_path / "seen.raw").read_bytes() == content, "the guest reads the image as it is"
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0xab 64k 64k", str(overlay))
    run("qemu-img", "convert", "-O", "raw", str(overlay), str(tmp_path / "after.raw"))
    after = (tmp_path / "after.raw").read_bytes()
    assert after[64 << 10:128 << 10] == b"\xab" * (64 << 10) and after[:64 << 10] == content[:64 << 10]
    assert base.read_bytes() == before, "the image is never written"
    assert "No errors were found" in run("qemu-img", "check", str(overlay))


async def test_a_launch_of_a_cached_image_runs_no_qemu_img(store: Store, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    raw_image(tmp_path / "seed.raw", 1 << 20)
    await store.images.put("seed", (tmp_path / "seed.raw").read_bytes())
    spec = VMSpec(name="vm", disks=[Disk(name="root")],
                  volumes=[Volume(name="root", source=ContainerDisk(image="seed"))])
    cache = tmp_path / "images"
    first = tmp_path / "vmi-1"
    first.mkdir()
    paths = await disks.prepare(spec, uid="u-1", vmi_dir=first, cache_dir=cache, images=store.images)
    info = await store.images.get_info("seed")
    cached = disks.image_path(cache, info.digest)
    assert os.getxattr(cached, disks.FORMAT_XATTR) == b"raw", "the format read as it was fetched is kept"
    # from now on a qemu-img run would fail the launch
    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / "qemu-img").write_text("#!/bin/sh\necho 'qemu-img ran' >&2\nexit 1\n")
    (shims / "qemu-img").chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{shims}:{os.environ['PATH']}")
    second = tmp_path / "vmi-2"
    second.mkdir()
    again = await disks.prepare(spec, uid="u-2", vmi_dir=second, cache_dir=cache, images=store.images)
    assert again["root"] == (str(second / "root.qcow2"), "qcow2")
    monkeypatch.undo()
    assert json.loads(run("qemu-img", "info", "--output=json", again["root"][0]))["full-backing-filename"] == \
        str(cached)
    assert paths["root"][0] != again["root"][0]


async def test_a_copy_cached_without_its_format_is_read_again_and_keeps_it(store: Store, tmp_path: Path) -> None:
    raw_image(tmp_path / "seed.raw", 1 << 20)
    await store.images.put("seed", (tmp_path / "seed.raw").read_bytes())
    cached = await disks.cached_image(store.images, "seed", tmp_path / "images")
    os.removexattr(cached, disks.FORMAT_XATTR)  # as an older launcher left it
    assert disks.image_format(cached) == "raw"
    assert os.getxattr(cached, disks.FORMAT_XATTR) == b"raw"


async def test_an_image_of_a_size_qemu_img_rounds_still_gets_its_overlay(tmp_path: Path) -> None:
    base = tmp_path / "odd.raw"
    base.write_bytes(b"\x01" * 1000)
    overlay = tmp_path / "disk.qcow2"
    await disks.make_overlay(overlay, base, "raw")  # not written here: qemu-img makes it
    assert json.loads(run("qemu-img", "info", "--output=json", str(overlay)))["full-backing-filename"] == str(base)
