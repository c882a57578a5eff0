"""What `virtbus get vms|vmis|nodes -o json` shows: KubeVirt's and Kubernetes' objects (proto.resources).

The spec is the reverse of proto.kubevirt: a manifest, converted and printed back, converts to the same spec.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

import msgspec
import pytest
import yaml

from proto.api import NodeView, VMView
from proto.manifest import parse_manifest_obj
from proto.resources import node_object, timestamp, vm_manifest, vm_object, vmi_object
from proto.spec import RunStrategy, VMSpec
from proto.state import VM, VMI, Condition, Node, Phase, VMIInterface, restart_required
from tests.conftest import EXAMPLES, REPO

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
VIRTUAL_MACHINES = sorted(p.name for p in EXAMPLES.glob("*.yaml")
                          if yaml.safe_load(p.read_text()).get("kind") == "VirtualMachine")


def spec_of(doc: object) -> VMSpec:
    spec = parse_manifest_obj(doc)  # proto.kubevirt's conversion, then validation
    assert isinstance(spec, VMSpec)
    return spec


def example(name: str) -> VMSpec:
    return spec_of(yaml.safe_load((EXAMPLES / name).read_text()))


def everything() -> VMSpec:
    """A spec with every field virtbus holds set away from its default."""
    doc = yaml.safe_load((EXAMPLES / "testvm-2-secondary.yaml").read_text())
    doc["spec"] = {"runStrategy": "Manual", "template": doc["spec"]["template"]}
    doc["metadata"]["labels"] = {"app": "web", "example.com/tier": "front"}  # the VM's own
    tspec = doc["spec"]["template"]["spec"]
    tspec["domain"]["cpu"] = {"cores": 2, "sockets": 1, "threads": 2}
    tspec["domain"]["devices"]["disks"][0].update(bootOrder=1, disk={"bus": "sata"})
    tspec["domain"]["devices"]["disks"].append({"name": "scratch"})
    tspec["domain"]["devices"]["interfaces"][0].update(macAddress="02:00:00:00:00:01", model="e1000", ports=[
        {"port": 80}, {"port": 53, "protocol": "UDP", "name": "dns"}])
    tspec["volumes"].append({"name": "scratch", "emptyDisk": {"capacity": "1Gi"}})
    tspec["volumes"][1]["cloudInitNoCloud"] = {"userData": "#cloud-config\n", "networkDataBase64":
                                               base64.b64encode(b"version: 2\n").decode()}
    tspec.update(nodeSelector={"kubernetes.io/hostname": "node1"}, terminationGracePeriodSeconds=0,
                 startStrategy="Paused")
    tspec["domain"]["devices"].update(rng={}, inputs=[{"name": "tablet", "type": "tablet", "bus": "virtio"}],
                                      autoattachGraphicsDevice=False, autoattachMemBalloon=True)
    tspec["domain"]["devices"]["disks"][0].update(serial="VB-1", cache="none", io="native")
    tspec["domain"].update(
        firmware={"uuid": "2d6e0c3a-7c5e-4d4f-9a35-4f0c1b2a9e10", "serial": "VB-1"},
        clock={"timezone": "Asia/Kolkata", "timer": {"hpet": {"present": False}, "pit": {"tickPolicy": "discard"},
                                                     "rtc": {"tickPolicy": "catchup", "track": "guest"}}},
        features={"acpi": {}, "apic": {"enabled": False}, "smm": {"enabled": True}})
    return spec_of(doc)


def test_the_seed_virtual_machines_are_examples() -> None:
    assert VIRTUAL_MACHINES == ["testvm-2-secondary.yaml", "testvm-masquerade.yaml"]


@pytest.mark.parametrize("name", VIRTUAL_MACHINES)
def test_a_seed_manifest_round_trips(name: str) -> None:
    spec = example(name)
    assert spec_of(vm_manifest(spec)) == spec


def test_every_field_round_trips() -> None:
    spec = everything()
    assert spec_of(vm_manifest(spec)) == spec


def test_a_printed_vm_applies_again() -> None:
    """`virtbus get vm X -o json > x.json; virtbus apply -f x.json` changes nothing: metadata and status are ignored."""
    spec = everything()
    printed = vm_object(VMView(vm=VM(spec=spec, created_at=T0, failures=2, last_failure="boom"), revision=7,
                               printable_status="CrashLoopBackOff"))
    assert spec_of(copy.deepcopy(printed)) == spec
    assert printed["metadata"]["labels"] == {"app": "web", "example.com/tier": "front"}


def test_a_printed_vm_keeps_its_high_availability() -> None:
    """The annotation that asks for it is printed with the VM, so that an edit of the printed VM keeps it."""
    spec = spec_of(yaml.safe_load((REPO / "examples" / "testvm-ha.yaml").read_text()))
    assert spec.high_availability
    printed = vm_object(VMView(vm=VM(spec=spec, created_at=T0), revision=1, printable_status="Running"))
    assert printed["metadata"]["annotations"] == {"virtbus.io/high-availability": "true"}
    assert spec_of(printed) == spec


def test_the_kubevirt_form_of_a_spec() -> None:
    out = vm_manifest(everything())
    assert out["spec"]["runStrategy"] == "Manual" and "running" not in out["spec"]
    assert out["spec"]["template"]["metadata"]["labels"]["kubevirt.io/domain"] == "testvm-2"
    tspec = out["spec"]["template"]["spec"]
    domain = tspec["domain"]
    assert domain["cpu"] == {"cores": 2, "sockets": 1, "threads": 2}
    assert domain["resources"] == {"requests": {"memory": "64M"}}
    assert domain["devices"]["disks"][0] == {"name": "containerdisk", "disk": {"bus": "sata"}, "bootOrder": 1,
                                             "serial": "VB-1", "cache": "none", "io": "native"}
    assert domain["devices"]["inputs"] == [{"name": "tablet", "type": "tablet", "bus": "virtio"}]
    assert (domain["devices"]["rng"], domain["devices"]["autoattachGraphicsDevice"],
            domain["devices"]["autoattachMemBalloon"]) == ({}, False, True)
    assert domain["firmware"] == {"uuid": "2d6e0c3a-7c5e-4d4f-9a35-4f0c1b2a9e10", "serial": "VB-1"}
    assert domain["clock"]["timezone"] == "Asia/Kolkata" and domain["features"]["smm"] == {"enabled": True}
    assert domain["devices"]["interfaces"] == [
        {"name": "default", "masquerade": {}, "macAddress": "02:00:00:00:00:01", "model": "e1000",
         "ports": [{"port": 80, "protocol": "TCP"}, {"name": "dns", "port": 53, "protocol": "UDP"}]},
        {"name": "ext-net", "bridge": {}, "model": "virtio"}]
    assert tspec["networks"] == [{"name": "default", "pod": {}},
                                 {"name": "ext-net", "multus": {"networkName": "multus-br"}}]
    assert tspec["volumes"] == [
        {"name": "containerdisk", "containerDisk": {"image": "quay.io/kubevirt/cirros-container-disk-demo"}},
        {"name": "cloudinitdisk", "cloudInitNoCloud": {"userData": "#cloud-config\n", "networkData": "version: 2\n"}},
        {"name": "scratch", "emptyDisk": {"capacity": "1Gi"}}]
    assert tspec["nodeSelector"] == {"kubernetes.io/hostname": "node1"}
    assert tspec["terminationGracePeriodSeconds"] == 0
    assert tspec["startStrategy"] == "Paused"


def running_vmi() -> VMI:
    return VMI(
        name="testvm-2", uid="0b7c-uid", spec=example("testvm-2-secondary.yaml"), created_at=T0,
        phase=Phase.RUNNING, node_name="node2", started_at=T0 + 5, launcher_pid=4242,
        conditions=[Condition(type="PodScheduled", status="True", reason="Scheduled", last_transition_time=T0 + 1),
                    Condition(type="Ready", status="True", last_transition_time=T0 + 5)],
        interfaces=[VMIInterface(name="default", ip_address="10.244.1.7", ip_addresses=["10.244.1.7"],
                                 mac="02:00:0a:f4:01:07"),
                    VMIInterface(name="ext-net", ip_address="192.168.100.9", ip_addresses=["192.168.100.9"],
                                 mac="02:00:c0:a8:64:09")],
    )


def test_a_running_vmi_says_whether_it_may_move_as_kubevirts_live_migratable_condition() -> None:
    vmi = running_vmi()
    bridged = msgspec.structs.replace(vmi.spec, interfaces=[
        msgspec.structs.replace(vmi.spec.interfaces[0], binding="bridge"), *vmi.spec.interfaces[1:]])
    cond = vmi_object(msgspec.structs.replace(vmi, spec=bridged))["status"]["conditions"][-1]
    assert (cond["type"], cond["status"], cond["reason"]) == ("LiveMigratable", "False", "InterfaceNotLiveMigratable")
    assert "masquerade" in cond["message"]
    stopped = vmi_object(msgspec.structs.replace(vmi, phase=Phase.SUCCEEDED))["status"]["conditions"]
    assert "LiveMigratable" not in [c["type"] for c in stopped]  # said of a running instance only


def test_timestamps_are_rfc_3339_utc() -> None:
    assert timestamp(T0) == "2023-11-14T22:13:20Z"
    assert timestamp(0.0) is None and timestamp(None) is None


def test_a_vmi_is_a_virtual_machine_instance() -> None:
    out = vmi_object(running_vmi())
    assert (out["apiVersion"], out["kind"]) == ("kubevirt.io/v1", "VirtualMachineInstance")
    assert out["metadata"]["name"] == "testvm-2" and out["metadata"]["uid"] == "0b7c-uid"
    assert out["metadata"]["creationTimestamp"] == "2023-11-14T22:13:20Z"
    assert out["metadata"]["labels"] == {"kubevirt.io/size": "small", "kubevirt.io/domain": "testvm-2",
                                         "kubevirt.io/nodeName": "node2"}
    assert out["spec"]["domain"]["resources"]["requests"]["memory"] == "64M"
    assert [i["name"] for i in out["spec"]["domain"]["devices"]["interfaces"]] == ["default", "ext-net"]
    status = out["status"]
    assert (status["phase"], status["nodeName"]) == ("Running", "node2")
    assert status["interfaces"][0] == {"name": "default", "ipAddress": "10.244.1.7", "ipAddresses": ["10.244.1.7"],
                                       "mac": "02:00:0a:f4:01:07"}
    assert status["interfaces"][1]["ipAddress"] == "192.168.100.9"
    assert status["conditions"] == [
        {"type": "PodScheduled", "status": "True", "reason": "Scheduled", "lastTransitionTime": "2023-11-14T22:13:21Z"},
        {"type": "Ready", "status": "True", "lastTransitionTime": "2023-11-14T22:13:25Z"},
        {"type": "LiveMigratable", "status": "True"}]  # masquerade and a multus bridge: it may move
    assert status["phaseTransitionTimestamps"] == [
        {"phase": "Pending", "phaseTransitionTimestamp": "2023-11-14T22:13:20Z"},
        {"phase": "Running", "phaseTransitionTimestamp": "2023-11-14T22:13:25Z"}]
    assert status["launcherPid"] == 4242
    # empty values are left out, as kubectl does
    assert not {"reason", "stopRequested", "guestOSReady"} & status.keys()
    assert not {"phase", "nodeName", "interfaces", "uid"} & out.keys()  # nothing of virtbus's own shape on top


def test_a_failed_unscheduled_vmi() -> None:
    vmi = VMI(name="big", uid="u", spec=example("testvm-masquerade.yaml"), created_at=T0, phase=Phase.FAILED,
              reason="NodeUnreachable", finished_at=T0 + 60, stop_requested=True,
              conditions=[Condition(type="PodScheduled", status="False", reason="Unschedulable",
                                    message="0/2 nodes are available")])
    out = vmi_object(vmi)
    status = out["status"]
    assert (status["phase"], status["reason"], status["stopRequested"]) == ("Failed", "NodeUnreachable", True)
    assert status["conditions"] == [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                     "message": "0/2 nodes are available"}]
    assert [t["phase"] for t in status["phaseTransitionTimestamps"]] == ["Pending", "Failed"]
    assert not {"nodeName", "interfaces", "launcherPid"} & status.keys()
    assert "kubevirt.io/nodeName" not in out["metadata"]["labels"]


def test_a_vm_is_a_virtual_machine() -> None:
    spec = example("testvm-masquerade.yaml")
    vm = VM(spec=spec, created_at=T0, generation=3)
    vmi = msgspec.structs.replace(running_vmi(), spec=spec)  # started from the VM as it is
    out = vm_object(VMView(vm=vm, revision=42, printable_status="Running", vmi=vmi))
    assert (out["apiVersion"], out["kind"]) == ("kubevirt.io/v1", "VirtualMachine")
    assert out["metadata"] == {"name": "testvm", "creationTimestamp": "2023-11-14T22:13:20Z", "generation": 3,
                               "resourceVersion": "42"}
    assert out["spec"]["runStrategy"] == "Halted"  # the seed's `running: false`
    assert out["spec"]["template"]["spec"]["networks"] == [{"name": "default", "pod": {}}]
    assert out["status"] == {"printableStatus": "Running", "created": True, "ready": True}


def test_a_stopped_vm_and_one_in_a_crash_loop() -> None:
    spec = example("testvm-masquerade.yaml")
    stopped = vm_object(VMView(vm=VM(spec=spec, created_at=T0), revision=1, printable_status="Stopped"))
    assert stopped["status"] == {"printableStatus": "Stopped", "created": False, "ready": False}

    failing = VM(spec=spec, created_at=T0, failures=2, next_start_at=T0 + 20, last_failure="launcher exited",
                 start_requested=True)
    status = vm_object(VMView(vm=failing, revision=9, printable_status="CrashLoopBackOff"))["status"]
    assert status["printableStatus"] == "CrashLoopBackOff" and status["ready"] is False
    assert status["startFailure"] == {"consecutiveFailCount": 2, "retryAfterTimestamp": "2023-11-14T22:13:40Z"}
    assert status["conditions"] == [{"type": "Failure", "status": "True", "reason": "InstanceFailed",
                                     "message": "launcher exited"}]
    assert status["stateChangeRequests"] == [{"action": "Start"}]

    restarting = VM(spec=spec, created_at=T0, restart_of="old-uid")
    status = vm_object(VMView(vm=restarting, revision=3, printable_status="Running"))["status"]
    assert status["stateChangeRequests"] == [{"action": "Stop", "uid": "old-uid"}, {"action": "Start"}]


def test_a_vm_changed_while_its_instance_runs_says_a_restart_is_required() -> None:
    spec = msgspec.structs.replace(example("testvm-masquerade.yaml"), run_strategy=RunStrategy.ALWAYS)  # started
    vmi = msgspec.structs.replace(running_vmi(), spec=spec)
    bigger = msgspec.structs.replace(spec, memory="128Mi")
    status = vm_object(VMView(vm=VM(spec=bigger, created_at=T0, generation=2), revision=5, printable_status="Running",
                              vmi=vmi))["status"]
    assert status["conditions"] == [{"type": "RestartRequired", "status": "True",
                                     "message": "a non-live-updatable field was changed in the template spec"}]
    assert restart_required(bigger, vmi) and restart_required(msgspec.structs.replace(spec, labels={"a": "b"}), vmi)
    # what is the VM object's own reaches no instance: no restart for it
    for own in (dict(run_strategy=RunStrategy.MANUAL), dict(vm_labels={"team": "a"}), dict(high_availability=True)):
        assert not restart_required(msgspec.structs.replace(spec, **own), vmi), own
    assert not restart_required(spec, vmi)
    # no instance, a finished or stopping one, or a VM being stopped: the next start takes the spec as it is
    assert not restart_required(bigger, None)
    assert not restart_required(bigger, msgspec.structs.replace(vmi, phase=Phase.SUCCEEDED))
    assert not restart_required(bigger, msgspec.structs.replace(vmi, stop_requested=True))
    assert not restart_required(msgspec.structs.replace(bigger, run_strategy=RunStrategy.HALTED), vmi)


def node_view(kvm: bool, ready: bool = True) -> NodeView:
    node = Node(name="node1", cpus=2, memory=2 * 2**30, kvm=kvm, heartbeat=T0 + 30, started_at=T0,
                labels={"kubernetes.io/hostname": "node1"}, address="10.99.0.1", pod_cidr="10.244.1.0/24")
    return NodeView(node=node, ready=ready, allocated_memory=64 * 2**20, allocated_cpus=1, vmis=1)


def test_a_node_is_a_kubernetes_node() -> None:
    out: dict[str, Any] = node_object(node_view(kvm=False))
    assert (out["apiVersion"], out["kind"]) == ("v1", "Node")
    meta = out["metadata"]
    assert (meta["name"], meta["labels"], meta["creationTimestamp"]) == (
        "node1", {"kubernetes.io/hostname": "node1"}, "2023-11-14T22:13:20Z")
    assert meta["annotations"] == {"virtbus.io/allocated-cpu": "1", "virtbus.io/allocated-memory": "64Mi",
                                   "virtbus.io/vmis": "1", "virtbus.io/kvm": "false",
                                   "virtbus.io/vlan-access-ports": "false"}
    assert out["spec"] == {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]}
    status = out["status"]
    assert status["addresses"] == [{"type": "InternalIP", "address": "10.99.0.1"},
                                   {"type": "Hostname", "address": "node1"}]
    assert status["capacity"] == status["allocatable"] == {"cpu": "2", "memory": "2Gi"}  # no KVM: no kvm device
    ready = status["conditions"][0]
    assert (ready["type"], ready["status"], ready["lastHeartbeatTime"]) == ("Ready", "True", "2023-11-14T22:13:50Z")


def test_a_node_with_kvm_offers_the_kvm_device_and_an_unready_one_says_so() -> None:
    out = node_object(node_view(kvm=True, ready=False))
    assert out["status"]["capacity"]["devices.kubevirt.io/kvm"] == "1k"
    assert out["metadata"]["annotations"]["virtbus.io/kvm"] == "true"
    assert out["status"]["conditions"][0]["status"] == "False"


def test_volumes_templates_and_high_availability_round_trip() -> None:
    doc = yaml.safe_load((EXAMPLES / "testvm-masquerade.yaml").read_text())
    doc["metadata"]["annotations"] = {"virtbus.io/high-availability": "true"}
    doc["spec"] = {"runStrategy": "Always", "template": doc["spec"]["template"], "dataVolumeTemplates": [
        {"metadata": {"name": "root-dv"}, "spec": {"source": {"registry": {"url": "docker://quay.io/x/y"}},
                                                   "storage": {"resources": {"requests": {"storage": "1Gi"}}}}},
        {"metadata": {"name": "blank-dv"}, "spec": {"source": {"blank": {}},
                                                    "pvc": {"resources": {"requests": {"storage": "64Mi"}}}}}]}
    tspec = doc["spec"]["template"]["spec"]
    tspec["volumes"] += [{"name": "a", "dataVolume": {"name": "blank-dv"}},
                         {"name": "b", "persistentVolumeClaim": {"claimName": "kept"}}]
    tspec["domain"]["devices"]["disks"] += [{"name": "a"}, {"name": "b"}]
    spec = spec_of(doc)
    assert spec.high_availability and len(spec.data_volume_templates) == 2
    assert spec_of(vm_manifest(spec)) == spec
