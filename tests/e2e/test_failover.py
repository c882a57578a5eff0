"""Node loss, and never two copies: every process of the node running an HA VM is frozen (its
handler, the VMs' launchers, libvirtds and QEMUs). The HA VM runs again on the other node within
15 s of the freeze, while its old copy is still frozen (so never two running); a VM that did not ask
for HA stays where it is. When the node is let go, its launcher kills the old copy at once (its
lease has lapsed) and its handler clears the old pod away; the VM without HA simply runs on.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from proto import fencing
from tests.e2e.conftest import Lab
from tests.e2e.test_faults import pid_of, wait_until
from tests.e2e.test_networking import other, write_manifest
from tests.e2e.test_walking_skeleton import pids_in

pytestmark = pytest.mark.e2e
MARKER = "VIRTBUS-GUEST-READY"
FAILOVER_LIMIT_S = 15.0


def vmi_of(lab: Lab, name: str) -> dict[str, Any] | None:
    done = lab.cli("get", "vmis", name, "-o", "json", check=False)
    return json.loads(done.stdout) if done.returncode == 0 else None


def qemu_in(lab: Lab, node: str, name: str) -> int:
    """The guest's QEMU: the one libvirt named for the domain (libvirtd may be probing QEMU's
    capabilities with another QEMU, `-machine none`, at the same moment)."""
    pids = [p for p in pids_in(f"{lab.prefix}-{node}-{name}")
            if Path(f"/proc/{p}/comm").read_text().startswith("qemu")
            and f"guest={name}," in Path(f"/proc/{p}/cmdline").read_text().replace("\0", " ")]
    assert len(pids) == 1, [Path(f"/proc/{p}/cmdline").read_text().replace("\0", " ")[:200] for p in pids]
    return pids[0]


def state_of(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


def started_ha(lab: Lab, name: str) -> tuple[str, str]:
    """An HA VM (the annotation, runStrategy Always) started: its node and its instance's uid."""
    path = Path(write_manifest(lab, name, "masquerade"))
    manifest = json.loads(path.read_text())
    manifest["metadata"]["annotations"] = {fencing.ANNOTATION: "true"}
    manifest["spec"] = {"runStrategy": "Always", "template": manifest["spec"]["template"]}
    path.write_text(json.dumps(manifest))
    lab.cli("apply", "-f", str(path))
    lab.cli("start", name, "--wait", "--timeout", "300")
    first = vmi_of(lab, name)
    assert first is not None
    return first["status"]["nodeName"], first["metadata"]["uid"]


def test_a_lost_node_fails_its_ha_vm_over_and_kills_the_old_copy_when_back(lab: Lab) -> None:
    node, old_uid = started_ha(lab, "ha")
    lab.cli("apply", "-f", write_manifest(lab, "plain", "masquerade", node=node, running=True))
    lab.cli("start", "plain", "--wait", "--timeout", "300")
    plain_uid = vmi_of(lab, "plain")["metadata"]["uid"]  # type: ignore[index]
    lab.cli("console", "ha", "--log", "--until", MARKER, "--timeout", "180")
    old_qemu = qemu_in(lab, node, "ha")
    frozen = [pid_of(lab, f"handler-{node}")]
    for name in ("ha", "plain"):
        pidfile = lab.state_dir / "nodes" / node / "vmis" / name / "launcher.pid"
        frozen += [int(pidfile.read_text().split()[0]), *pids_in(f"{lab.prefix}-{node}-{name}")]
    try:
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        cut = time.monotonic()

        def running_elsewhere() -> bool:
            vmi = vmi_of(lab, "ha")
            return vmi is not None and vmi["status"].get("phase") == "Running" and \
                vmi["status"].get("nodeName") == other(node) and vmi["metadata"]["uid"] != old_uid

        wait_until("the HA VM running on the other node", running_elsewhere, 60, lab)
        failover_s = time.monotonic() - cut
        print(f"\nnode lost -> HA VM Running on {other(node)}: {failover_s:.1f}s")
        # the old copy is still there, frozen: not running, so never two copies at once
        assert state_of(old_qemu) == "T"
        assert failover_s < FAILOVER_LIMIT_S, f"failover took {failover_s:.1f}s\n{lab.logs()}"
        assert "NodeLostFencedOff" in lab.cli("get", "events").stdout  # the reason, for people
        plain = vmi_of(lab, "plain")
        assert plain is not None and plain["metadata"]["uid"] == plain_uid and plain["status"]["nodeName"] == node
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    back = time.monotonic()
    wait_until("the old QEMU killed by its fenced launcher", lambda: state_of(old_qemu) in (None, "Z"), 10, lab)
    print(f"node back -> old copy killed: {time.monotonic() - back:.1f}s")
    wait_until("the old pod cleared away", lambda: f"{lab.prefix}-{node}-ha" not in lab.netns(), 120, lab)
    ha = vmi_of(lab, "ha")
    assert ha is not None and ha["status"]["phase"] == "Running" and ha["status"]["nodeName"] == other(node)
    assert ha["metadata"]["uid"] != old_uid
    plain = vmi_of(lab, "plain")
    assert plain is not None and (plain["metadata"]["uid"], plain["status"]["phase"]) == (plain_uid, "Running")
    for name in ("ha", "plain"):
        lab.cli("delete", name, "--wait", "--timeout", "120")


def test_a_frozen_launcher_cannot_keep_its_guest_once_failed_over(lab: Lab) -> None:
    """Only the launcher is frozen: it cannot fence, and its QEMU runs on. Its lease lapses all the
    same; the handler, told the instance was failed over, kills that QEMU before the next run starts."""
    node, old_uid = started_ha(lab, "solo")
    old_qemu = qemu_in(lab, node, "solo")
    launcher = int((lab.state_dir / "nodes" / node / "vmis" / "solo" / "launcher.pid").read_text().split()[0])
    overlap: list[str] = []
    try:
        os.kill(launcher, signal.SIGSTOP)
        cut = time.monotonic()

        def replaced() -> bool:
            vmi = vmi_of(lab, "solo")
            running = vmi is not None and vmi["metadata"]["uid"] != old_uid and vmi["status"].get("phase") == "Running"
            if running and state_of(old_qemu) not in (None, "Z"):
                overlap.append(f"old QEMU {old_qemu} still {state_of(old_qemu)} with the new run Running")
            return running

        wait_until("the HA VM running again", replaced, 90, lab)
        print(f"\nlauncher frozen -> HA VM Running again: {time.monotonic() - cut:.1f}s")
        assert not overlap, overlap
        assert state_of(old_qemu) in (None, "Z")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(launcher, signal.SIGCONT)
    wait_until("the frozen launcher ended", lambda: state_of(launcher) in (None, "Z"), 30, lab)
    # the new run's guest boots (and, booted, heeds the power button: a booting one has its 30 s grace
    # waited out, which on a busy box was most of this test's time)
    lab.cli("console", "solo", "--log", "--until", MARKER, "--timeout", "180")
    lab.cli("delete", "solo", "--wait", "--timeout", "120")


def node_ready(lab: Lab, node: str) -> bool | None:
    """The node's Ready condition as `get nodes` says it; None when there is no such node."""
    done = lab.cli("get", "nodes", "-o", "json", check=False)
    for item in json.loads(done.stdout)["items"] if done.returncode == 0 else []:
        if item["metadata"]["name"] == node:
            return any(c["type"] == "Ready" and c["status"] == "True" for c in item["status"]["conditions"])
    return None


def test_a_node_deleted_as_lost_has_its_vm_run_elsewhere_and_the_old_copy_killed_when_back(lab: Lab) -> None:
    """kubectl delete node, with real guests: a node whose handler is frozen goes NotReady while its
    guest runs on; deleted, its VM (no HA) runs again on the other node; let go, the node registers
    again and its handler kills the old copy and clears its pod away."""
    lab.cli("apply", "-f", write_manifest(lab, "orphan", "masquerade"))
    lab.cli("start", "orphan", "--wait", "--timeout", "300")
    first = vmi_of(lab, "orphan")
    assert first is not None
    node, old_uid = first["status"]["nodeName"], first["metadata"]["uid"]
    old_qemu = qemu_in(lab, node, "orphan")
    refused = lab.cli("delete", "node", node, check=False)
    assert refused.returncode != 0 and "is Ready" in refused.stderr, refused.stderr
    handler = pid_of(lab, f"handler-{node}")
    try:
        os.kill(handler, signal.SIGSTOP)
        cut = time.monotonic()
        wait_until(f"{node} NotReady", lambda: node_ready(lab, node) is False, 60, lab)
        print(f"\nhandler frozen -> {node} NotReady: {time.monotonic() - cut:.1f}s")
        said = lab.cli("delete", "node", node).stdout
        assert f'node "{node}" deleted; its VMIs given up: orphan' in said, said
        deleted = time.monotonic()
        assert node_ready(lab, node) is None

        def running_elsewhere() -> bool:
            vmi = vmi_of(lab, "orphan")
            return vmi is not None and vmi["metadata"]["uid"] != old_uid and vmi["status"].get("phase") == "Running"
        wait_until("the VM running on the other node", running_elsewhere, 120, lab)
        print(f"node deleted -> VM Running on {other(node)}: {time.monotonic() - deleted:.1f}s")
        assert vmi_of(lab, "orphan")["status"]["nodeName"] == other(node)  # type: ignore[index]
        assert "NodeDeleted" in lab.cli("get", "events").stdout
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(handler, signal.SIGCONT)
    back = time.monotonic()
    wait_until(f"{node} registered again and Ready", lambda: node_ready(lab, node) is True, 60, lab)
    wait_until("the old QEMU killed", lambda: state_of(old_qemu) in (None, "Z"), 60, lab)
    print(f"handler back -> old copy killed: {time.monotonic() - back:.1f}s")
    wait_until("the old pod cleared away", lambda: f"{lab.prefix}-{node}-orphan" not in lab.netns(), 120, lab)
    now = vmi_of(lab, "orphan")
    assert now is not None and now["status"]["phase"] == "Running" and now["status"]["nodeName"] == other(node)
    lab.cli("console", "orphan", "--log", "--until", MARKER, "--timeout", "180")
    lab.cli("delete", "orphan", "--wait", "--timeout", "120")
