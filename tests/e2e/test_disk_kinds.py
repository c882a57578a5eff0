"""Disk kinds with real guests.

Installing from an ISO: the test guest made into a bootable El Torito ISO (isolinux), imported into the
image store, and examples/testvm-iso-install.yaml applied as it is: the guest boots from the sata cdrom
(bootOrder 1) and sees its blank virtio disk (bootOrder 2). Turned the other way round, a bootable disk
first, the same cdrom is not what boots; on a scsi cdrom (virtio-scsi) it boots as well.

A hostDisk: made under the directory the lab's nodes allow, written by the guest, kept after the VM is
deleted; one elsewhere fails the instance with its field, and nothing is made there.

An ephemeral disk the guest writes leaves its volume's file byte for byte as it was; a config drive
reaches the guest as an ISO labelled config-2."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.e2e.conftest import Lab, guest_disk

pytestmark = pytest.mark.e2e
MARKER = "VIRTBUS-GUEST-READY"
# isolinux's banner on the serial console (its SERIAL directive); the guest disk boots by SYSLINUX, silently
FROM_CDROM = "ISOLINUX"
IMAGE = "installer-iso"  # what the example's cdrom names
ROOT_SECTORS = 64 * 1024 * 1024 // 512  # the example's blank 64Mi disk, as /sys/block/vda/size says it
ISOLINUX = Path("/usr/lib/ISOLINUX/isolinux.bin")
LDLINUX = Path("/usr/lib/syslinux/modules/bios/ldlinux.c32")


def build_iso(out: Path) -> Path:
    """The cached test guest's kernel and initramfs on an isolinux CD (a few MB; well under a second)."""
    guest = Path(guest_disk()).parent
    src = out / "iso"
    (src / "isolinux").mkdir(parents=True)
    for path in (ISOLINUX, LDLINUX):
        shutil.copy(path, src / "isolinux")
    for name in ("bzImage", "initrd.cpio"):
        shutil.copy(guest / name, src)
    (src / "isolinux" / "isolinux.cfg").write_text(
        "SERIAL 0 115200\nDEFAULT linux\nPROMPT 0\nTIMEOUT 0\n"
        "LABEL linux\n  KERNEL /bzImage\n  INITRD /initrd.cpio\n  APPEND console=ttyS0 quiet\n")
    iso = out / "installer.iso"
    subprocess.run(["genisoimage", "-quiet", "-o", str(iso), "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat",
                    "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table", "-V", "VIRTBUS-INSTALLER", "-J", "-R",
                    str(src)], check=True, capture_output=True)
    return iso


def console(lab: Lab, name: str) -> str:
    return lab.cli("console", name, "--log", "--until", MARKER, "--timeout", "180").stdout


@pytest.mark.skipif(not (ISOLINUX.exists() and LDLINUX.exists()), reason="isolinux missing (scripts/setup.sh)")
def test_install_from_an_iso_and_boot_order(lab: Lab, tmp_path: Path) -> None:
    lab.cli("image", "import", IMAGE, "--file", str(build_iso(tmp_path)))
    example = REPO / "examples" / "testvm-iso-install.yaml"
    lab.cli("apply", "-f", str(example))
    lab.cli("start", "testvm-iso", "--wait", "--timeout", "300")
    out = console(lab, "testvm-iso")
    assert FROM_CDROM in out, out[-1500:]
    lab.cli("console", "testvm-iso", "--send", "echo SZ$((2+3))-$(cat /sys/block/vda/size)-E\\n")
    seen = lab.cli("console", "testvm-iso", "--log", "--until", "SZ5-", "--timeout", "60").stdout
    assert f"SZ5-{ROOT_SECTORS}-E" in seen, seen[-1500:]
    lab.cli("delete", "vm", "testvm-iso", "--wait", "--timeout", "120")

    # the other way round: a bootable disk first, the installer second; the disk is what boots
    doc = yaml.safe_load(example.read_text())
    doc["metadata"]["name"] = "disk-first"
    doc["spec"].pop("dataVolumeTemplates")
    tspec = doc["spec"]["template"]["spec"]
    tspec["domain"]["devices"]["disks"][0]["bootOrder"] = 2
    tspec["domain"]["devices"]["disks"][1]["bootOrder"] = 1
    tspec["volumes"][1] = {"name": "root", "containerDisk": {"image": "quay.io/kubevirt/cirros-container-disk-demo"}}
    manifest = lab.state_dir / "disk-first.json"
    manifest.write_text(json.dumps(doc))
    lab.cli("apply", "-f", str(manifest))
    lab.cli("start", "disk-first", "--wait", "--timeout", "300")
    out = console(lab, "disk-first")
    assert FROM_CDROM not in out, out[-1500:]
    lab.cli("delete", "vm", "disk-first", "--wait", "--timeout", "120")

    # the installer on a scsi cdrom: a virtio-scsi controller, which SeaBIOS boots from too
    doc = yaml.safe_load(example.read_text())
    doc["metadata"]["name"] = "scsi-cdrom"
    doc["spec"]["dataVolumeTemplates"][0]["metadata"]["name"] = "scsi-cdrom-root"
    doc["spec"]["template"]["spec"]["volumes"][1]["dataVolume"]["name"] = "scsi-cdrom-root"
    doc["spec"]["template"]["spec"]["domain"]["devices"]["disks"][0]["cdrom"]["bus"] = "scsi"
    manifest.write_text(json.dumps(doc))
    lab.cli("apply", "-f", str(manifest))
    lab.cli("start", "scsi-cdrom", "--wait", "--timeout", "300")
    assert FROM_CDROM in console(lab, "scsi-cdrom")
    lab.cli("delete", "vm", "scsi-cdrom", "--wait", "--timeout", "120")


def vm_with(lab: Lab, name: str, *extra: dict[str, object]) -> str:
    """A VM booting the test guest, with more volumes, each on a virtio disk (vdb, vdc...)."""
    volumes: list[dict[str, object]] = [
        {"name": "root", "containerDisk": {"image": "quay.io/kubevirt/cirros-container-disk-demo"}}, *extra]
    manifest = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": name},
                "spec": {"runStrategy": "Halted", "template": {"spec": {
                    "domain": {"resources": {"requests": {"memory": "64M"}},
                               "devices": {"disks": [{"name": v["name"], "disk": {"bus": "virtio"}} for v in volumes]}},
                    "volumes": volumes}}}}
    out = lab.state_dir / f"{name}.json"
    out.write_text(json.dumps(manifest))
    return str(out)


def host_disk_vm(lab: Lab, name: str, path: Path) -> str:
    return vm_with(lab, name, {"name": "data", "hostDisk": {"path": str(path), "type": "DiskOrCreate",
                                                            "capacity": "16Mi"}})


def test_a_host_disk_under_the_allowed_directory_only(lab: Lab) -> None:
    allowed = lab.state_dir / "host-disks"  # what the lab's handlers get as --host-disk-dir
    path = allowed / "data.img"
    lab.cli("apply", "-f", host_disk_vm(lab, "hoster", path))
    lab.cli("start", "hoster", "--wait", "--timeout", "300")
    console(lab, "hoster")
    assert path.stat().st_size == 16 << 20
    lab.cli("console", "hoster", "--send", "echo host-disk-$((6*7)) > /dev/vdb; sync; echo W$((1+1))-done\\n")
    lab.cli("console", "hoster", "--log", "--until", "W2-done", "--timeout", "60")
    lab.cli("delete", "vm", "hoster", "--wait", "--timeout", "120")
    assert path.read_bytes()[:14] == b"host-disk-42\n\0", "the operator's file outlives the VM, with what was written"

    elsewhere = lab.state_dir / "elsewhere.img"
    lab.cli("apply", "-f", host_disk_vm(lab, "trespasser", elsewhere))
    failed = lab.cli("start", "trespasser", "--wait", "--timeout", "120", check=False)
    assert failed.returncode != 0 and "spec.template.spec.volumes[1].hostDisk.path" in failed.stderr, failed.stderr
    assert "outside" in failed.stderr and not elsewhere.exists()
    lab.cli("delete", "vm", "trespasser", "--wait", "--timeout", "120")


def test_an_ephemeral_disk_leaves_its_volume_be_and_a_config_drive_reaches_the_guest(lab: Lab) -> None:
    lab.cli("volume", "create", "golden", "--size", "16Mi")
    lab.cli("apply", "-f", vm_with(lab, "throwaway", {"name": "golden", "ephemeral": {
        "persistentVolumeClaim": {"claimName": "golden"}}}, {"name": "config", "cloudInitConfigDrive": {
            "userData": "#cloud-config\\n"}}))
    lab.cli("start", "throwaway", "--wait", "--timeout", "300")
    console(lab, "throwaway")
    [volume] = lab.state_dir.glob("nodes/*/volumes/golden-*.qcow2")  # made by its first user, this one
    before = hashlib.sha256(volume.read_bytes()).hexdigest()
    # an ISO's volume id is the 32 bytes at 32808 (sector 16 of 2048, offset 40)
    lab.cli("console", "throwaway", "--send", "echo scribbled > /dev/vdb; sync; "
            "echo L$((1+1))-$(head -c 9 /dev/vdb)-$(dd if=/dev/vdc bs=1 skip=32808 count=8 2>/dev/null)-E\\n")
    seen = lab.cli("console", "throwaway", "--log", "--until", "L2-", "--timeout", "60").stdout
    assert "L2-scribbled-config-2-E" in seen, seen[-1500:]
    lab.cli("stop", "throwaway", "--wait", "--timeout", "120")
    assert hashlib.sha256(volume.read_bytes()).hexdigest() == before, "the volume was never written"
    lab.cli("delete", "vm", "throwaway", "--wait", "--timeout", "120")
    lab.cli("volume", "delete", "golden")
