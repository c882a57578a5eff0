"""Layer-2 secondary networks (NADs without ipam): virtbus gives no address, the guest gets its lease
from the segment's own DHCP server (the lab's dnsmasq on the outside host), and the VMI's status
shows the address the launcher saw in the DHCP ACK."""

from __future__ import annotations

import json
import re
import time
from ipaddress import IPv4Address
from typing import Any

import yaml

from ctl.labdhcp import PROVIDER_DHCP, leases
from tests.conftest import REPO
from tests.e2e.conftest import Lab
from tests.e2e.test_networking import started


def vm_on(lab: Lab, name: str, node: str, network: str, **spec: str) -> str:
    """testvm-2 as the seed writes it (pod network + a bridge NIC ext-net), on network, pinned to node."""
    doc = yaml.safe_load((REPO / "examples" / "testvm-2-secondary.yaml").read_text())
    doc["metadata"]["name"] = name
    doc["spec"]["running"] = True
    template = doc["spec"]["template"]["spec"]
    template["networks"][1]["multus"]["networkName"] = network
    template.update(nodeSelector={"kubernetes.io/hostname": node}, **spec)
    path = lab.state_dir / f"{name}.json"
    path.write_text(json.dumps(doc))
    return str(path)


def status_address(lab: Lab, name: str, interface: str, timeout: float = 30) -> str:
    """The interface's address in ``get vmis NAME -o json``, once the node reported it."""
    deadline = time.monotonic() + timeout
    while True:
        vmi: Any = lab.json("get", "vmis", name)
        nic = next(i for i in vmi["status"]["interfaces"] if i["name"] == interface)
        if nic.get("ipAddress"):
            return str(nic["ipAddress"])
        assert time.monotonic() < deadline, f"no address in the status of {interface}: {vmi['status']}"
        time.sleep(0.5)


def console_lease(lab: Lab, name: str, prefix: str) -> str:
    out = lab.cli("console", name, "--log", "--until", f"VIRTBUS-GUEST-IP {prefix}", "--timeout", "120").stdout
    found = re.findall(rf"VIRTBUS-GUEST-IP ({re.escape(prefix)}\d+)", out)
    assert found, out
    return found[-1]


def test_a_guest_on_a_nad_without_ipam_gets_its_address_from_the_segments_dhcp(lab: Lab) -> None:
    lab.cli("apply", "-f", str(REPO / "examples" / "provider-l2.yaml"))
    lab.cli("apply", "-f", vm_on(lab, "l2vm", "node1", "provider-l2"))
    vmi = started(lab, "l2vm")
    nic = next(i for i in vmi["status"]["interfaces"] if i["name"] == "ext-net")
    got = console_lease(lab, "l2vm", "192.168.200.")
    assert IPv4Address(PROVIDER_DHCP.first) <= IPv4Address(got) <= IPv4Address(PROVIDER_DHCP.last)
    assert status_address(lab, "l2vm", "ext-net") == got  # learnt from the ACK, no guest agent
    assert leases(lab.state_dir, PROVIDER_DHCP).get(nic["mac"]) == got  # the lab's dnsmasq gave it
    console_lease(lab, "l2vm", "10.0.2.")  # the pod network's NIC kept its own lease
    lab.cli("console", "l2vm", "--send", "ping -c 2 -W 3 192.168.200.1 >/dev/null && echo SEGMENT-$((6*7))\\n")
    lab.cli("console", "l2vm", "--log", "--until", "SEGMENT-42", "--timeout", "60")
    lab.cli("delete", "l2vm", "--wait", "--timeout", "120")
