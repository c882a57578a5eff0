"""The machine around a real guest (examples/testvm-machine.yaml applied as it is): the guest finds the
virtio-rng device on its PCI bus and a clock an hour ahead of UTC; its QEMU was given the SMBIOS serial
number and UUID, no HPET and SMM, as libvirt writes them; and the instance says the UUID its guest got.
(The test guest's kernel has no DMI tables support, so the SMBIOS side is read off QEMU's command line.)
A VM without a UUID keeps one over its runs; one with a tablet, a disk serial and no screen shows the
guest those, and VNC is refused for it with the reason."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import pytest
import yaml

from ctl.client import ApiClient
from proto import subjects
from proto.errors import ApiError, Code
from proto.vnc import Screenshot
from tests.conftest import REPO
from tests.e2e.conftest import Lab
from tests.e2e.test_failover import qemu_in
from tests.e2e.test_networking import write_manifest

pytestmark = pytest.mark.e2e
NAME = "testvm-machine"
MARKER = "VIRTBUS-GUEST-READY"
UUID = "2d6e0c3a-7c5e-4d4f-9a35-4f0c1b2a9e10"
ANSWER = re.compile(r"CLK(\d+)-RNG(\d+)-DONE")


def test_the_machine_reaches_the_guest(lab: Lab) -> None:
    lab.cli("apply", "-f", str(REPO / "examples" / "testvm-machine.yaml"))
    lab.cli("start", NAME, "--wait", "--timeout", "300")
    lab.cli("console", NAME, "--log", "--until", MARKER, "--timeout", "180")
    # 0x1044: virtio's (modern) entropy device; the guest's clock read from the RTC at its boot
    lab.cli("console", NAME, "--send",
            "echo CLK$(date +%s)-RNG$(grep -l 0x1044 /sys/bus/pci/devices/*/device | wc -l)-DO''NE\\n")
    seen = lab.cli("console", NAME, "--log", "--until", "DONE", "--timeout", "60").stdout  # the answer, not the echo
    host_now = time.time()
    found = ANSWER.findall(seen)
    assert found, seen[-1500:]
    guest_now, rng_devices = int(found[-1][0]), int(found[-1][1])
    assert rng_devices == 1
    assert abs(guest_now - host_now - 3600) < 60, (guest_now, host_now)

    vmi = json.loads(lab.cli("get", "vmis", NAME, "-o", "json").stdout)
    assert vmi["spec"]["domain"]["firmware"] == {"uuid": UUID, "serial": "VB-0001-MACHINE"}
    assert vmi["spec"]["domain"]["devices"]["rng"] == {}
    line = Path(f"/proc/{qemu_in(lab, vmi['status']['nodeName'], NAME)}/cmdline").read_text().split("\0")
    smbios = line[line.index("-smbios") + 1].split(",")
    assert {"serial=VB-0001-MACHINE", f"uuid={UUID}", "manufacturer=KubeVirt"} <= set(smbios), smbios
    assert "-no-hpet" in line and line[line.index("-uuid") + 1] == UUID
    assert any("smm=on" in arg for arg in line), line
    lab.cli("delete", "vm", NAME, "--wait", "--timeout", "120")


def test_a_vm_without_a_firmware_uuid_gets_the_same_one_on_every_start(lab: Lab) -> None:
    path = Path(write_manifest(lab, "stable-uuid", "masquerade"))
    manifest = json.loads(path.read_text())
    manifest["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 0  # stopped before its guest is up
    path.write_text(json.dumps(manifest))
    lab.cli("apply", "-f", str(path))
    seen = []
    for _ in range(2):
        lab.cli("start", "stable-uuid", "--wait", "--timeout", "300")
        vmi = json.loads(lab.cli("get", "vmis", "stable-uuid", "-o", "json").stdout)
        line = Path(f"/proc/{qemu_in(lab, vmi['status']['nodeName'], 'stable-uuid')}/cmdline").read_text().split("\0")
        seen.append((vmi["metadata"]["uid"], vmi["spec"]["domain"]["firmware"]["uuid"], line[line.index("-uuid") + 1]))
        lab.cli("stop", "stable-uuid", "--wait", "--timeout", "120")
    (uid1, uuid1, qemu1), (uid2, uuid2, qemu2) = seen
    assert uid1 != uid2  # two instances
    assert uuid1 == qemu1 == uuid2 == qemu2  # one machine
    lab.cli("delete", "vm", "stable-uuid", "--wait", "--timeout", "120")


DEVICES = "testvm-devices"
LISTED = re.compile(r"SER([A-Za-z0-9-]*)-TAB(\d+)-VGA(\d+)-DONE")


async def screenshot_by_hand(lab: Lab, node: str) -> ApiError:
    """The launcher's own answer on the bus, as a plain NATS client asks it (no CLI check before it)."""
    api = await ApiClient.connect(lab.url, lab.creds)
    try:
        with pytest.raises(ApiError) as err:
            await api.request(subjects.vnc_screenshot(node, DEVICES), b"{}", Screenshot, "launcher", "")
        return err.value
    finally:
        await api.close()


def test_devices_a_guest_sees_and_a_vm_without_a_screen(lab: Lab) -> None:
    """A virtio tablet, a disk serial number and no VGA card, as the guest finds them on its buses; VNC
    refused with the reason, by the CLI and by the launcher."""
    manifest = yaml.safe_load((REPO / "examples" / "testvm-machine.yaml").read_text())
    manifest["metadata"]["name"] = DEVICES
    devices = manifest["spec"]["template"]["spec"]["domain"]["devices"]
    devices.update(inputs=[{"name": "tablet", "type": "tablet", "bus": "virtio"}], autoattachGraphicsDevice=False)
    devices["disks"][0].update(serial="VB-DISK-1", cache="writethrough")
    path = lab.state_dir / f"{DEVICES}.json"
    path.write_text(json.dumps(manifest))
    lab.cli("apply", "-f", str(path))
    lab.cli("start", DEVICES, "--wait", "--timeout", "300")
    lab.cli("console", DEVICES, "--log", "--until", MARKER, "--timeout", "180")
    # 0x1052: virtio's input device; 0x1111: QEMU's VGA card (vendor 0x1234)
    lab.cli("console", DEVICES, "--send",
            "echo SER$(cat /sys/block/vda/serial)-TAB$(grep -l 0x1052 /sys/bus/pci/devices/*/device | wc -l)"
            "-VGA$(grep -l 0x1111 /sys/bus/pci/devices/*/device | wc -l)-DO''NE\\n")
    seen = lab.cli("console", DEVICES, "--log", "--until", "DONE", "--timeout", "60").stdout
    found = LISTED.findall(seen)
    assert found, seen[-1500:]
    assert found[-1] == ("VB-DISK-1", "1", "0")

    refused = lab.cli("vnc", DEVICES, "--screenshot", str(lab.state_dir / "no.png"), check=False)
    assert refused.returncode == 1 and "has no screen" in refused.stderr, refused.stderr
    node = json.loads(lab.cli("get", "vmis", DEVICES, "-o", "json").stdout)["status"]["nodeName"]
    err = asyncio.run(screenshot_by_hand(lab, node))
    assert err.code is Code.INVALID and "no screen" in err.message, err
    assert not (lab.state_dir / "no.png").exists()
    lab.cli("delete", "vm", DEVICES, "--wait", "--timeout", "120")
