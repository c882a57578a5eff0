"""Every disk and volume kind a KubeVirt manifest may bring: cdrom, lun, bootOrder, hostDisk,
cloudInitConfigDrive, ephemeral. Accepted ones translate right and come back the same from
``get -o yaml``; refused ones name their field in the manifest."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest
import yaml

from proto.errors import ApiError, Code
from proto.manifest import parse_manifest_obj
from proto.resources import vm_manifest
from proto.spec import (
    CloudInitConfigDrive,
    ContainerDisk,
    Disk,
    Ephemeral,
    HostDisk,
    PersistentVolumeClaim,
    VMSpec,
    Volume,
    claims,
)
from proto.validation import validate_vm
from tests.conftest import REPO

DISKS = "spec.template.spec.domain.devices.disks"
VOLUMES = "spec.template.spec.volumes"

# As users write them: an installer cdrom booted first, a blank disk, a host file, a throwaway copy of
# a golden volume and an OpenStack config drive.
MANIFEST = """
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: many-disks
spec:
  runStrategy: Halted
  template:
    spec:
      domain:
        devices:
          autoattachPodInterface: false  # disks only: no NIC (KubeVirt would give it the pod network)
          disks:
          - name: installer
            cdrom: {bus: sata, readonly: true, tray: closed}
            bootOrder: 1
          - name: root
            disk: {bus: virtio}
            bootOrder: 2
          - name: scratch
            disk: {bus: scsi, readonly: true}
          - name: golden
            disk: {}
          - name: configdrive
            cdrom: {bus: scsi}
        resources:
          requests:
            memory: 64Mi
      volumes:
      - name: installer
        containerDisk: {image: installer-iso}
      - name: root
        persistentVolumeClaim: {claimName: root}
      - name: scratch
        hostDisk: {path: /srv/vm-disks/scratch.img, type: DiskOrCreate, capacity: 1Gi}
      - name: golden
        ephemeral:
          persistentVolumeClaim: {claimName: golden-image, readOnly: true}
      - name: configdrive
        cloudInitConfigDrive:
          userData: "#cloud-config\\n"
          networkDataBase64: eyJsaW5rcyI6IFtdfQ==
"""


def doc() -> dict[str, Any]:
    loaded = yaml.safe_load(MANIFEST)
    assert isinstance(loaded, dict)
    return loaded


def vm(obj: dict[str, Any]) -> VMSpec:
    spec = parse_manifest_obj(obj)
    assert isinstance(spec, VMSpec)
    return spec


def refused(obj: dict[str, Any]) -> ApiError:
    with pytest.raises(ApiError) as err:
        parse_manifest_obj(obj)
    return err.value


def test_every_kind_translates() -> None:
    spec = vm(doc())
    assert spec.disks == [
        Disk(name="installer", device="cdrom", bus="sata", readonly=True, boot_order=1),
        Disk(name="root", bus="virtio", boot_order=2),
        Disk(name="scratch", bus="scsi", readonly=True),
        Disk(name="golden"),
        Disk(name="configdrive", device="cdrom", bus="scsi", readonly=True),
    ]
    assert [v.source for v in spec.volumes] == [
        ContainerDisk(image="installer-iso"),
        PersistentVolumeClaim(claim_name="root"),
        HostDisk(path="/srv/vm-disks/scratch.img", kind="DiskOrCreate", capacity="1Gi"),
        Ephemeral(claim_name="golden-image"),
        CloudInitConfigDrive(user_data="#cloud-config\n", network_data='{"links": []}'),
    ]
    # an ephemeral use needs its volume and is held to its node, like a claim
    assert claims(spec.volumes) == [(1, "root"), (3, "golden-image")]


def test_a_cdrom_defaults_to_sata_and_read_only() -> None:
    obj = doc()
    obj["spec"]["template"]["spec"]["domain"]["devices"]["disks"][0] = {"name": "installer", "cdrom": {}}
    assert vm(obj).disks[0] == Disk(name="installer", device="cdrom", bus="sata", readonly=True)


def test_printed_back_it_applies_the_same() -> None:
    spec = vm(doc())
    printed = vm_manifest(spec)
    assert vm(copy.deepcopy(printed)) == spec


def test_the_iso_install_example() -> None:
    spec = vm(yaml.safe_load((REPO / "examples" / "testvm-iso-install.yaml").read_text()))
    assert [(d.name, d.device, d.bus, d.boot_order) for d in spec.disks] == [
        ("installer", "cdrom", "sata", 1), ("root", "disk", "virtio", 2)]
    assert spec.volumes[0].source == ContainerDisk(image="installer-iso")
    assert [t.name for t in spec.data_volume_templates] == ["testvm-iso-root"]


def at(obj: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    here: Any = obj
    for key in path[:-1]:
        here = here[key]
    here[path[-1]] = value
    return obj


TS = ["spec", "template", "spec"]
DEV = [*TS, "domain", "devices", "disks"]
VOL = [*TS, "volumes"]
HOST = [*VOL, 2, "hostDisk"]

REFUSED: list[tuple[list[Any], Any, str]] = [
    # cdrom
    ([*DEV, 0, "cdrom", "bus"], "virtio", f"{DISKS}[0].cdrom.bus"),  # as KubeVirt: no virtio cdrom
    ([*DEV, 0, "cdrom", "tray"], "open", f"{DISKS}[0].cdrom.tray"),  # a drive with no medium
    ([*DEV, 0, "cdrom", "readonly"], False, f"{DISKS}[0].cdrom.readonly"),
    ([*DEV, 0, "disk"], {"bus": "sata"}, f"{DISKS}[0].cdrom"),  # a disk and a cdrom at once
    ([*DEV, 0, "cdrom", "bus"], "usb", f"{DISKS}[0].cdrom.bus"),
    # lun: SCSI passthrough of a block device; every virtbus volume is a file
    ([*DEV, 1], {"name": "root", "lun": {"bus": "scsi"}}, f"{DISKS}[1].lun"),
    # bootOrder: unique and at least 1
    ([*DEV, 3, "bootOrder"], 1, f"{DISKS}[3].bootOrder"),
    ([*DEV, 3, "bootOrder"], 0, f"{DISKS}[3].bootOrder"),
    ([*DEV, 3, "bootOrder"], "1", f"{DISKS}[3].bootOrder"),
    # hostDisk: an absolute, normalised path; capacity exactly when made
    ([*HOST, "path"], "vm-disks/scratch.img", f"{VOLUMES}[2].hostDisk.path"),
    ([*HOST, "path"], "/srv/vm-disks/../../etc/shadow", f"{VOLUMES}[2].hostDisk.path"),
    ([*HOST, "path"], "/srv/vm-disks/./scratch.img", f"{VOLUMES}[2].hostDisk.path"),
    ([*HOST, "path"], "/srv/vm-disks/", f"{VOLUMES}[2].hostDisk.path"),
    ([*HOST, "path"], "//srv/x.img", f"{VOLUMES}[2].hostDisk.path"),
    ([*HOST, "path"], "/srv/a\nb.img", f"{VOLUMES}[2].hostDisk.path"),
    ([*HOST, "path"], "/", f"{VOLUMES}[2].hostDisk.path"),
    ([*HOST, "type"], "Directory", f"{VOLUMES}[2].hostDisk.type"),
    ([*HOST, "capacity"], None, f"{VOLUMES}[2].hostDisk.capacity"),  # DiskOrCreate needs one
    ([*HOST, "capacity"], "3Ti", f"{VOLUMES}[2].hostDisk.capacity"),
    ([*HOST, "shared"], True, f"{VOLUMES}[2].hostDisk.shared"),
    ([*HOST, "path"], None, f"{VOLUMES}[2].hostDisk.path"),
    # cloudInitConfigDrive: no Secrets in virtbus
    ([*VOL, 4, "cloudInitConfigDrive", "secretRef"], {"name": "s"}, f"{VOLUMES}[4].cloudInitConfigDrive.secretRef"),
    ([*VOL, 4, "cloudInitConfigDrive", "networkDataSecretRef"], {"name": "s"},
     f"{VOLUMES}[4].cloudInitConfigDrive.networkDataSecretRef"),
    ([*VOL, 4, "cloudInitConfigDrive", "userDataBase64"], "%%", f"{VOLUMES}[4].cloudInitConfigDrive.userDataBase64"),
    ([*VOL, 4, "cloudInitConfigDrive"], {}, f"{VOLUMES}[4].cloudInitConfigDrive"),
    # ephemeral
    ([*VOL, 3, "ephemeral", "persistentVolumeClaim", "claimName"], "Golden_Image",
     f"{VOLUMES}[3].ephemeral.persistentVolumeClaim.claimName"),
    ([*VOL, 3, "ephemeral"], {}, f"{VOLUMES}[3].ephemeral.persistentVolumeClaim"),
    ([*VOL, 3, "ephemeral", "dataVolume"], {"name": "x"}, f"{VOLUMES}[3].ephemeral.dataVolume"),
]


@pytest.mark.parametrize(("path", "value", "field"), REFUSED, ids=[f"{r[2]}={r[1]!r}" for r in REFUSED])
def test_refused_with_its_field(path: list[Any], value: Any, field: str) -> None:
    obj = doc()
    if value is None:
        here: Any = obj
        for key in path[:-1]:
            here = here[key]
        del here[path[-1]]
    else:
        at(obj, path, value)
    err = refused(obj)
    assert err.field == field, err
    assert err.code in (Code.INVALID, Code.BAD_REQUEST)


def test_hostdisk_of_type_disk_takes_no_capacity() -> None:
    obj = doc()
    at(obj, [*HOST, "type"], "Disk")
    assert refused(obj).field == f"{VOLUMES}[2].hostDisk.capacity"
    del obj["spec"]["template"]["spec"]["volumes"][2]["hostDisk"]["capacity"]
    assert vm(obj).volumes[2].source == HostDisk(path="/srv/vm-disks/scratch.img", kind="Disk")


def test_a_native_cdrom_on_virtio_is_refused() -> None:
    spec = VMSpec(name="vm", disks=[Disk(name="cd", device="cdrom", bus="virtio")],
                  volumes=[Volume(name="cd", source=ContainerDisk(image="installer-iso"))])
    with pytest.raises(ApiError) as err:
        validate_vm(spec)
    assert err.value.field == "spec.disks[0].bus"


def test_config_drive_text_comes_as_given_or_decoded() -> None:
    obj = doc()
    drive = obj["spec"]["template"]["spec"]["volumes"][4]["cloudInitConfigDrive"]
    drive.pop("userData")
    drive["userDataBase64"] = base64.b64encode(b"#!/bin/sh\necho hi\n").decode()
    source = vm(obj).volumes[4].source
    assert isinstance(source, CloudInitConfigDrive) and source.user_data == "#!/bin/sh\necho hi\n"
