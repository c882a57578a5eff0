"""The launcher prepares every disk kind with real tools and a real image store: a cdrom's ISO is the
node's cached copy, as it is; an ephemeral disk is an overlay that never writes its volume; a hostDisk
is made under an allowed directory only; a config drive is a config-2 ISO. And the API refuses an
ephemeral use of a volume that does not exist, with its field."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from launcher.disks import image_path, make_volume, prepare
from proto.errors import ApiError, Code
from proto.spec import (
    CloudInitConfigDrive,
    ContainerDisk,
    Disk,
    Ephemeral,
    HostDisk,
    VMSpec,
    Volume,
)
from scheduler.api import Api
from servicekit.paths import volume_path
from servicekit.store import Store


def iso(tmp_path: Path) -> bytes:
    src = tmp_path / "iso-src"
    src.mkdir()
    (src / "README").write_text("an installer\n")
    out = tmp_path / "installer.iso"
    subprocess.run(["genisoimage", "-quiet", "-o", str(out), "-V", "INSTALLER", str(src)], check=True)
    return out.read_bytes()


def run(*cmd: str) -> str:  # quick, and nothing else runs meanwhile: no thread needed
    return subprocess.run(cmd, capture_output=True, check=True, text=True).stdout


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def spec(allowed: Path) -> VMSpec:
    return VMSpec(name="installer-vm", disks=[
        Disk(name="installer", device="cdrom", bus="sata", readonly=True, boot_order=1),
        Disk(name="golden", boot_order=2), Disk(name="scratch"), Disk(name="config", device="cdrom")],
        volumes=[
            Volume(name="installer", source=ContainerDisk(image="installer-iso")),
            Volume(name="golden", source=Ephemeral(claim_name="golden")),
            Volume(name="scratch", source=HostDisk(path=str(allowed / "scratch.img"), kind="DiskOrCreate",
                                                   capacity="16Mi")),
            Volume(name="config", source=CloudInitConfigDrive(user_data="#cloud-config\n"))])


async def test_every_kind_prepared(store: Store, tmp_path: Path) -> None:
    await store.images.put("installer-iso", iso(tmp_path))
    api = Api(store)
    golden = (await api.volumes.create(b'{"name": "golden", "size": "32Mi"}')).item
    volumes_dir, allowed, vmi_dir = tmp_path / "volumes", tmp_path / "allowed", tmp_path / "vmi"
    allowed.mkdir()
    vmi_dir.mkdir()
    await make_volume(golden, volume_path(volumes_dir, golden), images=store.images, cache_dir=tmp_path / "images")
    before = digest(volume_path(volumes_dir, golden))
    paths = await prepare(spec(allowed), uid="u-1", vmi_dir=vmi_dir, cache_dir=tmp_path / "images",
                          images=store.images, volumes={"golden": golden}, volumes_dir=volumes_dir,
                          host_disk_dirs=(allowed,))
    info = await store.images.get_info("installer-iso")
    assert paths["installer"] == (str(image_path(tmp_path / "images", info.digest)), "raw"), "the cached ISO itself"
    overlay, fmt = paths["golden"]
    assert (Path(overlay).parent, fmt) == (vmi_dir, "qcow2")
    backing = json.loads(run("qemu-img", "info", "--output=json", overlay))
    assert backing["full-backing-filename"] == str(volume_path(volumes_dir, golden))
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0xab 0 1M", overlay)
    assert digest(volume_path(volumes_dir, golden)) == before, "a write to the ephemeral disk left the volume be"
    assert paths["scratch"] == (str(allowed / "scratch.img"), "raw")
    assert (allowed / "scratch.img").stat().st_size == 16 << 20
    assert paths["config"] == (str(vmi_dir / "config-2.iso"), "raw")


async def test_a_hostdisk_elsewhere_fails_with_its_field(store: Store, tmp_path: Path) -> None:
    vm = VMSpec(name="vm", disks=[Disk(name="etc")],
                volumes=[Volume(name="etc", source=HostDisk(path="/etc/hostname"))])
    with pytest.raises(ApiError) as err:
        await prepare(vm, uid="u-1", vmi_dir=tmp_path, cache_dir=tmp_path / "images", images=store.images,
                      host_disk_dirs=(tmp_path,))
    assert (err.value.code, err.value.field) == (Code.INVALID, "spec.template.spec.volumes[0].hostDisk.path")
    assert "outside" in err.value.message


async def test_an_ephemeral_use_of_no_volume_is_refused(store: Store) -> None:
    manifest = b"""{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "vm"},
      "spec": {"template": {"spec": {"domain": {"devices": {"disks": [{"name": "d"}]},
                                                 "resources": {"requests": {"memory": "64Mi"}}},
                                      "volumes": [{"name": "d", "ephemeral": {"persistentVolumeClaim":
                                                   {"claimName": "missing"}}}]}}}}"""
    with pytest.raises(ApiError) as err:
        await Api(store).vm_create(manifest)
    assert err.value.field == "spec.template.spec.volumes[0].ephemeral.persistentVolumeClaim"
