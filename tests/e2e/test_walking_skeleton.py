"""The seed testvm, as a new user runs it: import, apply, start, console, stop, delete."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.conftest import EXAMPLES
from tests.e2e.conftest import Lab, guest_disk

pytestmark = pytest.mark.e2e
MARKER = "VIRTBUS-GUEST-READY"


def pids_in(netns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True, check=False).stdout
    return [int(p) for p in out.split()]


def test_two_nodes_are_ready(lab: Lab) -> None:
    nodes = lab.json("get", "nodes")
    assert isinstance(nodes, list)
    assert sorted((n["node"]["name"], n["ready"]) for n in nodes) == [("node1", True), ("node2", True)]
    assert lab.netns() == sorted([f"{lab.prefix}-lab", f"{lab.prefix}-node1", f"{lab.prefix}-node2"])


def test_seed_testvm_lifecycle(lab: Lab) -> None:
    lab.cli("image", "import", "quay.io/kubevirt/cirros-container-disk-demo", "--file", guest_disk())
    assert "quay.io/kubevirt/cirros-container-disk-demo" in lab.cli("image", "list").stdout

    applied = lab.cli("apply", "-f", str(EXAMPLES / "testvm-masquerade.yaml"))
    assert "virtualmachine/testvm applied (Stopped)" in applied.stdout
    lab.cli("apply", "-f", str(EXAMPLES / "testvm-masquerade.yaml"))  # the same again changes nothing
    vm = lab.json("get", "vms", "testvm")
    assert isinstance(vm, dict) and vm["vm"]["generation"] == 1 and vm["printableStatus"] == "Stopped"
    assert lab.cli("get", "vms").stdout.splitlines()[1].split()[2] == "Stopped"

    started = time.monotonic()
    out = lab.cli("start", "testvm", "--wait", "--timeout", "300")
    assert "Running" in out.stdout, out.stdout
    vmi = lab.json("get", "vmis", "testvm")
    assert isinstance(vmi, dict)
    assert vmi["phase"] == "Running" and vmi["nodeName"] in ("node1", "node2"), vmi
    pod = f"{lab.prefix}-{vmi['nodeName']}-testvm"
    assert pod in lab.netns()
    assert pids_in(pod), "no libvirtd/QEMU in the VM's pod namespace"

    console = lab.cli("console", "testvm", "--log", "--until", MARKER, "--timeout", "180")
    assert MARKER in console.stdout
    print(f"start -> marker: {time.monotonic() - started:.1f}s")

    # Starting a running VM is not an error (the lab command is idempotent).
    assert "already running" in lab.cli("start", "testvm").stdout

    lab.cli("stop", "testvm", "--wait", "--timeout", "120")
    assert lab.cli("get", "vms", "testvm").stdout.splitlines()[1].split()[2] == "Stopped"
    assert lab.cli("get", "vmis", "testvm", check=False).returncode == 1
    # The guest powered off by itself on the ACPI button: its kernel said so on the console.
    assert "Power down" in lab.cli("console", "testvm", "--log").stdout
    assert pod not in lab.netns()
    assert not (lab.state_dir / "nodes" / vmi["nodeName"] / "vmis" / "testvm").exists()

    lab.cli("delete", "testvm", "--wait", "--timeout", "120")
    missing = lab.cli("get", "vms", "testvm", check=False)
    assert missing.returncode == 1 and "NotFound" in missing.stderr
    assert lab.netns() == sorted([f"{lab.prefix}-lab", f"{lab.prefix}-node1", f"{lab.prefix}-node2"])
    for node in ("node1", "node2"):
        vmis_dir = lab.state_dir / "nodes" / node / "vmis"
        assert not vmis_dir.exists() or list(vmis_dir.iterdir()) == []
