"""A VirtualMachineInstanceReplicaSet on a real lab with real guests: examples/testvmirs.yaml applied
unchanged reaches 2 Running; one instance's launcher SIGKILLed for real is replaced by a new instance
that runs; scaled to 1, one is left; deleted, its instances go. A node drained for maintenance: its
VM's guest runs again on the other node."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from tests.e2e.conftest import Lab
from tests.e2e.test_faults import wait_until
from tests.e2e.test_networking import http_get, write_manifest

pytestmark = pytest.mark.e2e
RS = "testreplicaset"
MARKER = "VIRTBUS-GUEST-READY"


def instances(lab: Lab) -> list[dict[str, Any]]:
    listed = lab.json("get", "vmis")
    assert isinstance(listed, dict)
    return [i for i in listed["items"]
            if any(o["name"] == RS for o in i["metadata"].get("ownerReferences", []))]


def running(lab: Lab) -> list[dict[str, Any]]:
    return [i for i in instances(lab) if i["status"].get("phase") == "Running"]


def status(lab: Lab) -> dict[str, Any]:
    got = lab.json("get", "vmirs", RS)
    assert isinstance(got, dict)
    return dict(got["status"])


def test_a_replica_set_keeps_real_guests_running(lab: Lab) -> None:
    began = time.monotonic()
    lab.cli("apply", "-f", str(REPO / "examples" / "testvmirs.yaml"))
    wait_until("2 instances Running", lambda: status(lab) == {"replicas": 2, "readyReplicas": 2}, 300, lab)
    first = running(lab)
    assert len(first) == 2 and all(i["metadata"]["name"].startswith(f"{RS}-") for i in first)
    for item in first:
        lab.cli("console", item["metadata"]["name"], "--log", "--until", MARKER, "--timeout", "180")
    print(f"\nvmirs of 2 -> both guests booted: {time.monotonic() - began:.1f}s")
    table = lab.cli("get", "vmirs").stdout
    assert table.split("\n")[1].split()[:4] == [RS, "2", "2", "2"], table

    victim = first[0]
    name, node = victim["metadata"]["name"], victim["status"]["nodeName"]
    launcher = int((lab.state_dir / "nodes" / node / "vmis" / name / "launcher.pid").read_text().split()[0])
    os.kill(launcher, signal.SIGKILL)  # a process of this test's lab, found by the lab's own pidfile
    killed = time.monotonic()

    def replaced() -> bool:
        now = running(lab)
        return len(now) == 2 and name not in {i["metadata"]["name"] for i in now}
    wait_until("a replacement Running", replaced, 300, lab)
    print(f"launcher killed -> replacement Running: {time.monotonic() - killed:.1f}s")
    wait_until("the killed instance removed", lambda: name not in {i["metadata"]["name"] for i in instances(lab)},
               120, lab)

    lab.cli("scale", "vmirs", RS, "--replicas", "1")
    wait_until("one instance left", lambda: len(instances(lab)) == 1 and len(running(lab)) == 1, 180, lab)
    assert status(lab) == {"replicas": 1, "readyReplicas": 1}

    lab.cli("delete", "vmirs", RS)
    wait_until("its instances gone", lambda: not instances(lab), 180, lab)
    assert "not found" in lab.cli("get", "vmirs", RS, check=False).stderr


def vmi_of(lab: Lab, name: str) -> dict[str, Any]:
    got = lab.json("get", "vmi", name)
    assert isinstance(got, dict)
    return got


def test_drain_moves_a_vm_to_the_other_node_and_its_guest_answers_there(lab: Lab) -> None:
    """kubectl drain's habits with real guests: what may not go unasked is refused and nothing is
    evicted; with the flags, the VM's guest is stopped and runs again on the other node, where it
    answers HTTP; a VMI of nobody's just ends; the node stays cordoned until uncordoned."""
    lab.cli("apply", "-f", str(REPO / "examples" / "testvm-masquerade.yaml"))
    try:
        lab.cli("start", "testvm", "--wait")
        first = vmi_of(lab, "testvm")
        node = first["status"]["nodeName"]
        other = "node2" if node == "node1" else "node1"
        # the other node cordoned, the VMI of nobody's goes next to the VM: both on the node to drain
        assert lab.cli("cordon", other).stdout.strip() == f"node/{other} cordoned"
        nodes = lab.cli("get", "nodes").stdout
        assert f"{other}" in nodes and "Ready,SchedulingDisabled" in nodes, nodes
        lab.cli("apply", "-f", str(REPO / "examples" / "testvmi.yaml"))
        wait_until("testvmi Running", lambda: vmi_of(lab, "testvmi")["status"].get("phase") == "Running", 180, lab)
        assert vmi_of(lab, "testvmi")["status"]["nodeName"] == node
        assert lab.cli("uncordon", other).stdout.strip() == f"node/{other} uncordoned"

        refused = lab.cli("drain", node, check=False)
        assert refused.returncode != 0
        assert "vmi/testvmi" in refused.stderr and "use --force" in refused.stderr, refused.stderr
        assert "vmi/testvm" in refused.stderr and "--delete-emptydir-data" in refused.stderr, refused.stderr
        assert vmi_of(lab, "testvm")["metadata"]["uid"] == first["metadata"]["uid"]  # nothing was evicted
        assert vmi_of(lab, "testvmi")["status"]["phase"] == "Running"

        began = time.monotonic()
        done = lab.cli("drain", node, "--force", "--delete-emptydir-data", "--timeout", "3m").stdout
        print(f"\ndrain of 2 real guests: {time.monotonic() - began:.1f}s")
        assert f"node/{node} drained" in done and "evicting vmi/testvm:" in done, done
        assert "VM testvm starts it again on another node" in done, done
        moved = time.monotonic()
        wait_until("testvm Running on the other node",
                   lambda: (v := vmi_of(lab, "testvm"))["metadata"]["uid"] != first["metadata"]["uid"]
                   and v["status"].get("phase") == "Running", 180, lab)
        print(f"drained -> testvm Running on {other}: {time.monotonic() - moved:.1f}s")
        again = vmi_of(lab, "testvm")
        assert again["status"]["nodeName"] == other
        lab.cli("console", "testvm", "--log", "--until", MARKER, "--timeout", "180")
        ip = again["status"]["interfaces"][0]["ipAddress"]
        assert "hostname: testvm" in http_get(lab, node, f"http://{ip}/")  # from the drained node, across
        assert vmi_of(lab, "testvmi")["status"]["phase"] in ("Succeeded", "Failed")  # nobody runs it again
        row = next(line for line in lab.cli("get", "nodes").stdout.splitlines() if line.startswith(node))
        assert row.split()[1] == "Ready,SchedulingDisabled", row
        assert lab.cli("uncordon", node).stdout.strip() == f"node/{node} uncordoned"
        described = lab.cli("describe", "node", node).stdout
        assert "NodeNotSchedulable" in described and "NodeSchedulable" in described, described
    finally:
        for n in ("node1", "node2"):
            lab.cli("uncordon", n, check=False)
        lab.cli("delete", "vmi", "testvmi", "--wait", check=False)
        lab.cli("delete", "testvm", "--wait", check=False)


def test_a_replica_set_that_keeps_apart_has_one_guest_per_node(lab: Lab) -> None:
    """examples/testvmirs-spread.yaml as it is: its two instances on two nodes, each guest booted; a
    third waits Unschedulable with kube-scheduler's reason, and runs once a node is free for it."""
    rs = "spreadreplicaset"

    def members() -> list[dict[str, Any]]:
        listed = lab.json("get", "vmis")
        assert isinstance(listed, dict)
        return [i for i in listed["items"] if any(o["name"] == rs for o in i["metadata"].get("ownerReferences", []))]

    lab.cli("apply", "-f", str(REPO / "examples" / "testvmirs-spread.yaml"))
    try:
        wait_until("2 instances Running", lambda: len([i for i in members()
                                                       if i["status"].get("phase") == "Running"]) == 2, 300, lab)
        first = members()
        assert sorted(i["status"]["nodeName"] for i in first) == ["node1", "node2"]
        for item in first:
            lab.cli("console", item["metadata"]["name"], "--log", "--until", MARKER, "--timeout", "180")
        lab.cli("scale", "vmirs", rs, "--replicas", "3")

        def third() -> dict[str, Any] | None:
            return next((i for i in members() if not i["status"].get("nodeName")), None)
        wait_until("a third instance, waiting", lambda: third() is not None and any(
            c.get("reason") == "Unschedulable" for c in (third() or {}).get("status", {}).get("conditions", [])),
            120, lab)
        waiting = third()
        assert waiting is not None
        why = next(c["message"] for c in waiting["status"]["conditions"] if c["type"] == "PodScheduled")
        assert why == "0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules.", why
        # one of the two deleted: the replica set's count holds, and the waiting one takes its node
        victim = first[0]["metadata"]["name"]
        lab.cli("delete", "vmi", victim, "--wait")
        wait_until("3 wanted, 2 Running, one per node", lambda: sorted(
            i["status"].get("nodeName") or "" for i in members() if i["status"].get("phase") == "Running")
            == ["node1", "node2"] and victim not in {i["metadata"]["name"] for i in members()}, 300, lab)
    finally:
        lab.cli("delete", "vmirs", rs, check=False)
        wait_until("its instances gone", lambda: not members(), 180, lab)


def test_labels_and_taints_steer_a_real_guest(lab: Lab) -> None:
    """kubectl's label and taint on the lab's nodes: a VM selecting a label no node has, and kept off
    by taints, says why it waits in plain words; once a node is labelled and its taint tolerated or
    removed, its guest boots there."""
    path = lab.state_dir / "steered.json"
    manifest = json.loads(Path(write_manifest(lab, "steered", "masquerade", running=True)).read_text())
    manifest["spec"]["template"]["spec"]["nodeSelector"] = {"disk": "ssd"}
    path.write_text(json.dumps(manifest))
    try:
        assert lab.cli("taint", "node", "node1", "dedicated=db:NoSchedule").stdout.strip() == "node/node1 tainted"
        lab.cli("apply", "-f", str(path))

        def why() -> str:
            vmi = lab.json("get", "vmi", "steered")
            assert isinstance(vmi, dict)
            return next((c["message"] for c in vmi["status"].get("conditions", [])
                         if c["type"] == "PodScheduled" and c["status"] == "False"), "")
        wait_until("steered waiting", lambda: why().startswith("0/2 nodes are available"), 60, lab)
        assert why() == ("0/2 nodes are available: 1 node(s) didn't match node selector, "
                         "1 node(s) had untolerated taint {dedicated: db}."), why()
        assert lab.cli("label", "node", "node1", "disk=ssd").stdout.strip() == "node/node1 labeled"
        time.sleep(6)  # past the binder's resync: the taint still keeps it off the one node it selects
        assert lab.json("get", "vmi", "steered")["status"].get("phase") != "Running"  # type: ignore[index]
        assert lab.cli("taint", "node", "node1", "dedicated-").stdout.strip() == "node/node1 untainted"
        wait_until("steered Running on node1", lambda: (v := lab.json("get", "vmi", "steered")) is not None
                   and isinstance(v, dict) and v["status"].get("phase") == "Running"
                   and v["status"].get("nodeName") == "node1", 120, lab)
        lab.cli("console", "steered", "--log", "--until", MARKER, "--timeout", "180")
        node = lab.json("get", "node", "node1")
        assert isinstance(node, dict) and node["metadata"]["labels"]["disk"] == "ssd"
    finally:
        lab.cli("taint", "node", "node1", "dedicated-", check=False)
        lab.cli("label", "node", "node1", "disk-", check=False)
        lab.cli("delete", "steered", "--wait", check=False)


def test_a_vm_of_higher_priority_preempts_a_real_guest(lab: Lab) -> None:
    """KubeVirt's example PriorityClasses applied as they are; node1 full (cpuAllocationRatio 1: two
    vCPUs) with a VM of no class; a VM of class preemtible selecting node1 preempts it: its guest boots
    there, and the preempted VM waits, saying why, with kube-scheduler's Preempted event."""
    ratio = lab.state_dir / "ratio.json"

    def cluster_ratio(value: int) -> str:
        ratio.write_text(json.dumps({"apiVersion": "kubevirt.io/v1", "kind": "KubeVirt",
                                     "metadata": {"name": "kubevirt", "namespace": "kubevirt"},
                                     "spec": {"configuration": {"developerConfiguration": {
                                         "cpuAllocationRatio": value}}}}))
        return str(ratio)

    def vm(name: str, priority_class: str | None) -> str:
        path = Path(write_manifest(lab, name, "masquerade", running=True))
        manifest = json.loads(path.read_text())
        spec = manifest["spec"]["template"]["spec"]
        spec["nodeSelector"] = {"kubernetes.io/hostname": "node1"}
        spec["domain"]["cpu"] = {"cores": 2}
        if priority_class is not None:
            spec["priorityClassName"] = priority_class
        path.write_text(json.dumps(manifest))
        return str(path)

    def vmi(name: str) -> dict[str, Any]:
        got = lab.json("get", "vmi", name)
        assert isinstance(got, dict)
        return got

    try:
        applied = lab.cli("apply", "-f", str(REPO / "examples" / "priorityclasses.yaml")).stdout
        assert "priorityclass.scheduling.k8s.io/preemtible applied (value 1000000)" in applied, applied
        listed = [line.split() for line in lab.cli("get", "priorityclasses").stdout.splitlines()]
        assert ["preemtible", "1000000", "false", "PreemptLowerPriority"] in listed, listed
        assert ["non-preemtible", "999999999", "false", "Never"] in listed, listed
        lab.cli("apply", "-f", cluster_ratio(1))
        lab.cli("apply", "-f", vm("batch", None))
        wait_until("batch Running", lambda: vmi("batch")["status"].get("phase") == "Running", 120, lab)
        # its guest booted, so it heeds the preemption's power button (one still booting is given its
        # 30 s grace first)
        lab.cli("console", "batch", "--log", "--until", MARKER, "--timeout", "180")
        first = vmi("batch")["metadata"]["uid"]
        began = time.monotonic()
        lab.cli("apply", "-f", vm("vip", "preemtible"))
        wait_until("vip Running on node1", lambda: vmi("vip")["status"].get("phase") == "Running"
                   and vmi("vip")["status"].get("nodeName") == "node1", 180, lab)
        print(f"\npreempting VM applied -> Running in the room it made: {time.monotonic() - began:.1f}s")
        lab.cli("console", "vip", "--log", "--until", MARKER, "--timeout", "180")
        # batch's VM runs it again (Always), and the new instance waits for room, saying why
        wait_until("batch waiting", lambda: vmi("batch")["metadata"]["uid"] != first
                   and vmi("batch")["status"].get("phase") == "Scheduling", 60, lab)
        why = next(c["message"] for c in vmi("batch")["status"]["conditions"] if c["type"] == "PodScheduled")
        assert why == "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) didn't match node selector.", why
        events = lab.cli("get", "events").stdout
        assert any("Preempted" in line and "vmi/batch" in line and "preempted by vip (priority 1000000) on node "
                   "node1" in line for line in events.splitlines()), events[-2000:]
    finally:
        for name in ("vip", "batch"):
            lab.cli("delete", name, "--wait", check=False)
        lab.cli("apply", "-f", cluster_ratio(10), check=False)
        for name in ("preemtible", "non-preemtible"):
            lab.cli("delete", "priorityclass", name, check=False)
