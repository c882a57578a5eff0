"""The machine around a real guest (examples/testvm-machine.yaml applied as it is): the guest finds the
virtio-rng device on its PCI bus and a clock an hour ahead of UTC; its QEMU was given the SMBIOS serial
number and UUID, no HPET and SMM, as libvirt writes them; and the instance says the UUID its guest got.
(The test guest's kernel has no DMI tables support, so the SMBIOS side is read off QEMU's command line.)"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

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
    lab.cli("apply", "-f", write_manifest(lab, "stable-uuid", "masquerade"))
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
