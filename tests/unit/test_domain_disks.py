"""The domain XML of every disk kind: cdroms on sata and scsi (with a virtio-scsi controller),
per-device boot order and never <os><boot dev>, read-only media; checked against libvirt's own
schema where virt-xml-validate is installed."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from launcher.domain import compose_domain_xml, plan_domain
from proto.manifest import parse_manifest
from proto.spec import VMSpec
from tests.unit.test_disk_kinds import MANIFEST
from tests.unit.test_domain import machine_args

PATHS = {"installer": ("/cache/ab/cdef.img", "raw"), "root": ("/volumes/root.qcow2", "qcow2"),
         "scratch": ("/srv/vm-disks/scratch.img", "raw"), "golden": ("/v/golden.qcow2", "qcow2"),
         "configdrive": ("/v/config-2.iso", "raw")}


def xml() -> str:
    spec = parse_manifest(MANIFEST.encode())
    assert isinstance(spec, VMSpec)
    plan = plan_domain(spec, uid="0b6c5f4e-1111-4222-8333-444455556666", domain_type="qemu", disk_paths=PATHS,
                       taps={}, serial_log="/v/serial.log")
    return compose_domain_xml(plan)


def disks() -> dict[str, ET.Element]:
    dom = ET.fromstring(xml())
    out = {}
    for disk in dom.findall("devices/disk"):
        alias = disk.find("alias")
        assert alias is not None
        out[str(alias.get("name")).removeprefix("ua-")] = disk
    return out


def attrs(el: ET.Element | None, *names: str) -> tuple[str | None, ...]:
    assert el is not None
    return tuple(el.get(name) for name in names)


def test_cdroms_are_read_only_media_on_their_bus() -> None:
    found = disks()
    assert attrs(found["installer"], "device") == ("cdrom",)
    assert attrs(found["installer"].find("target"), "dev", "bus") == ("sda", "sata")
    assert attrs(found["installer"].find("driver"), "type") == ("raw",)  # the cached ISO, no overlay
    assert attrs(found["installer"].find("source"), "file") == ("/cache/ab/cdef.img",)
    assert found["installer"].find("readonly") is not None
    assert attrs(found["configdrive"], "device") == ("cdrom",)
    assert attrs(found["configdrive"].find("target"), "dev", "bus") == ("sdc", "scsi")
    assert found["configdrive"].find("readonly") is not None


def test_a_sata_cdrom_keeps_q35s_sata_controller() -> None:
    assert machine_args(ET.fromstring(xml())) == ["-machine", "smbus=off"]


def test_disks_read_only_only_when_asked() -> None:
    found = disks()
    assert found["scratch"].find("readonly") is not None  # disk: {readonly: true}
    assert found["root"].find("readonly") is None and found["golden"].find("readonly") is None
    assert attrs(found["scratch"].find("driver"), "type") == ("raw",)  # a hostDisk is raw, never probed


def test_scsi_disks_get_a_virtio_scsi_controller() -> None:
    dom = ET.fromstring(xml())
    assert [attrs(c, "model") for c in dom.findall("devices/controller[@type='scsi']")] == [("virtio-scsi",)]


def test_boot_order_per_device_and_no_boot_dev() -> None:
    found = disks()
    orders = {name: (d.find("boot").get("order") if d.find("boot") is not None else None)  # type: ignore[union-attr]
              for name, d in found.items()}
    assert orders == {"installer": "1", "root": "2", "scratch": None, "golden": None, "configdrive": None}
    assert ET.fromstring(xml()).find("os/boot") is None  # libvirt refuses both kinds at once


@pytest.mark.skipif(not (shutil.which("virt-xml-validate") and shutil.which("xmllint")),
                    reason="libvirt's schema checker (virt-xml-validate, xmllint) is not installed")
def test_libvirt_schema_accepts_it(tmp_path: Path) -> None:
    path = tmp_path / "domain.xml"
    path.write_text(xml())
    done = subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr + done.stdout
