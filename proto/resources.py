"""virtbus's state as the objects kubectl prints: what ``virtbus get vms|vmis|nodes -o json|yaml`` shows.

A VM is a kubevirt.io/v1 VirtualMachine, an instance a VirtualMachineInstance and a node a v1 Node, in the
field names KubeVirt and Kubernetes use, with empty values left out as their Go structs' ``omitempty``
does. The spec is the reverse of proto.kubevirt's conversion, so a VirtualMachine printed here can be
applied again (proto.kubevirt ignores the metadata and status around it). The API's replies (proto.api)
keep virtbus's own shape; only the CLI prints these.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from proto import fencing, migrations
from proto.affinity import affinity_manifest, spread_manifest
from proto.api import NodeView, VMView
from proto.dnsconfig import dns_config_manifest
from proto.kubevirt import REGISTRY_SCHEME
from proto.machine import firmware_uuid, machine_manifest
from proto.probes import probe_manifest
from proto.quantity import format_bytes
from proto.spec import (
    CloudInitConfigDrive,
    CloudInitNoCloud,
    ContainerDisk,
    DataVolumeTemplate,
    Disk,
    EmptyDisk,
    Ephemeral,
    HostDisk,
    Interface,
    Network,
    PersistentVolumeClaim,
    Port,
    VMSpec,
    Volume,
)
from proto.state import (
    FINAL_PHASES,
    RESTART_REQUIRED,
    RESTART_REQUIRED_MESSAGE,
    VM,
    VMI,
    Condition,
    MigrationOptions,
    MigrationPhase,
    MigrationState,
    Phase,
    VolumeStatus,
    is_ready,
    restart_required,
)
from proto.taints import UNSCHEDULABLE, tolerations_manifest

KUBEVIRT_API = "kubevirt.io/v1"
ANNOTATIONS = "virtbus.io/"
# KubeVirt's device plugin advertises /dev/kvm on a node as this resource, 1000 of it ("1k"), and not at
# all where there is none; virtbus says the same of a node whose KVM probe failed (guests under TCG).
KVM_RESOURCE = "devices.kubevirt.io/kvm"
KVM_DEVICES = "1k"

Obj = dict[str, Any]


def timestamp(seconds: float | None) -> str | None:
    """A Kubernetes time (metav1.Time): RFC 3339 in UTC, whole seconds; None when unset."""
    if not seconds:
        return None
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _empty(value: object) -> bool:
    return value is None or (isinstance(value, str | list | dict) and not value)


def _compact(fields: Obj) -> Obj:
    """Go's omitempty: None, "", [] and {} go; False and 0 say something and stay."""
    return {key: value for key, value in fields.items() if not _empty(value)}


def _given(fields: Obj) -> Obj:
    """Only None goes: in a spec, "" is a value the user wrote, and must come back as written."""
    return {key: value for key, value in fields.items() if value is not None}


def object_list(items: list[Obj]) -> Obj:
    """What kubectl prints for a list of objects of any kind."""
    return {"apiVersion": "v1", "kind": "List", "items": items}


# --- the spec: the reverse of proto.kubevirt


def vmi_spec(spec: VMSpec, *, sized: bool = True) -> Obj:
    """A VMSpec as KubeVirt's VirtualMachineInstanceSpec (a VM's ``spec.template.spec``); sized=False
    for a VM whose instancetype says its cpu and memory (they may not be said twice)."""
    machine, machine_devices = machine_manifest(spec)
    return _compact({
        # the machine's fields as they are: `rng: {}` is a device, and `firmware: {}` was said
        "domain": {**_compact({
            "cpu": {"cores": spec.cpu.cores, "sockets": spec.cpu.sockets, "threads": spec.cpu.threads} if sized else {},
            "resources": {"requests": {"memory": spec.memory}} if sized else {},
            "devices": {**_compact({"disks": [_disk(d) for d in spec.disks],
                                    "interfaces": [_interface(i) for i in spec.interfaces],
                                    # no NIC at all: said, or KubeVirt's reader (and ours) would add one
                                    "autoattachPodInterface": None if spec.interfaces or spec.networks else False,
                                    "disableHotplug": spec.disable_hotplug or None}),
                        **machine_devices},
        }), **machine},
        "networks": [_network(n) for n in spec.networks],
        "volumes": [_volume(v) for v in spec.volumes],
        "nodeSelector": dict(spec.node_selector),
        "hostname": spec.hostname, "subdomain": spec.subdomain,
        "startStrategy": "Paused" if spec.start_paused else None,
        "evictionStrategy": spec.eviction_strategy,
        "dnsPolicy": spec.dns_policy if spec.dns_policy != "ClusterFirst" else None,
        "dnsConfig": dns_config_manifest(spec.dns_config) if spec.dns_config is not None else None,
        "priorityClassName": spec.priority_class_name,
        "affinity": affinity_manifest(spec.affinity) if spec.affinity is not None else None,
        "tolerations": tolerations_manifest(spec.tolerations) if spec.tolerations else None,
        "topologySpreadConstraints": spread_manifest(spec.topology_spread_constraints)
        if spec.topology_spread_constraints else None,
        "readinessProbe": probe_manifest(spec.readiness_probe) if spec.readiness_probe is not None else None,
        "livenessProbe": probe_manifest(spec.liveness_probe) if spec.liveness_probe is not None else None,
        # always, even at virtbus's default: a KubeVirt reader would otherwise assume KubeVirt's (180 s)
        "terminationGracePeriodSeconds": spec.termination_grace_period_seconds,
    })


def vm_manifest(spec: VMSpec) -> Obj:
    """The VirtualMachine that proto.kubevirt turns into ``spec``."""
    metadata: Obj = {"name": spec.name, **({"labels": dict(spec.vm_labels)} if spec.vm_labels else {})}
    if spec.high_availability:
        metadata["annotations"] = {fencing.ANNOTATION: "true"}
    return {
        "apiVersion": KUBEVIRT_API,
        "kind": "VirtualMachine",
        "metadata": metadata,
        # runStrategy rather than running: KubeVirt takes either (not both), and only runStrategy can say
        # Manual and RerunOnFailure
        "spec": _compact({"runStrategy": spec.run_strategy.value,
                          "instancetype": {"name": spec.instancetype} if spec.instancetype else {},
                          "dataVolumeTemplates": [_template(t) for t in spec.data_volume_templates],
                          "template": _compact({"metadata": _compact({"labels": dict(spec.labels)}),
                                                "spec": vmi_spec(spec, sized=spec.instancetype is None)})}),
    }


def _disk(disk: Disk) -> Obj:
    target: Obj = {"bus": disk.bus, **({"readonly": True} if disk.readonly else {})}
    return _given({"name": disk.name, disk.device: target, "bootOrder": disk.boot_order, "serial": disk.serial,
                   "cache": disk.cache, "io": disk.io})


def _port(port: Port) -> Obj:
    return _given({"name": port.name, "port": port.port, "protocol": port.protocol})


def _interface(iface: Interface) -> Obj:
    return {"name": iface.name, iface.binding: {},
            **_given({"macAddress": iface.mac_address, "model": iface.model}),
            **({"ports": [_port(p) for p in iface.ports]} if iface.ports else {})}


def _network(network: Network) -> Obj:
    if network.kind == "multus":
        return {"name": network.name, "multus": {"networkName": network.network_name}}
    return {"name": network.name, "pod": {}}


def _volume(volume: Volume) -> Obj:
    source: tuple[str, Obj]
    match volume.source:
        case ContainerDisk(image=image):
            source = ("containerDisk", {"image": image})
        case EmptyDisk(capacity=capacity):
            source = ("emptyDisk", {"capacity": capacity})
        case CloudInitNoCloud(user_data=user_data, network_data=network_data) | \
                CloudInitConfigDrive(user_data=user_data, network_data=network_data):
            # plain text, not base64: proto.kubevirt decoded it, and takes either back
            kind = "cloudInitNoCloud" if isinstance(volume.source, CloudInitNoCloud) else "cloudInitConfigDrive"
            source = (kind, {**({"userData": user_data} if user_data else {}), **_given({"networkData": network_data})})
        case HostDisk(path=path, kind=kind, capacity=capacity):
            source = ("hostDisk", _given({"path": path, "type": kind, "capacity": capacity}))
        case Ephemeral(claim_name=claim):
            source = ("ephemeral", {"persistentVolumeClaim": {"claimName": claim}})
        case PersistentVolumeClaim(claim_name=claim, hotpluggable=hotpluggable):  # a dataVolume too: a virtbus volume
            source = ("persistentVolumeClaim", {"claimName": claim, **({"hotpluggable": True} if hotpluggable else {})})
    return {"name": volume.name, source[0]: source[1]}


def _template(template: DataVolumeTemplate) -> Obj:
    source: Obj = {"registry": {"url": f"{REGISTRY_SCHEME}{template.image}"}} if template.image else {"blank": {}}
    return {"metadata": {"name": template.name},
            "spec": {"source": source, "storage": {"resources": {"requests": {"storage": template.size}}}}}


# --- VirtualMachineInstance


def vmi_labels(vmi: VMI) -> dict[str, str]:
    """Its labels as `get vmis -o yaml` prints them and `get vmis -l` selects by (a Service selects by
    its launcher pod's: proto.services.pod_labels)."""
    labels = dict(vmi.spec.labels)
    if vmi.node_name:
        labels["kubevirt.io/nodeName"] = vmi.node_name  # as virt-controller labels a scheduled VMI
    return labels


def _with_firmware_uuid(spec: Obj, uuid: str) -> Obj:
    """An instance's spec says the UUID its guest was given, as KubeVirt's VMI does, whether or not its
    VM named one (the guest reads it with ``dmidecode -s system-uuid``)."""
    domain = spec.setdefault("domain", {})
    domain["firmware"] = {**domain.get("firmware", {}), "uuid": uuid}
    return spec


def vmi_object(vmi: VMI) -> Obj:
    labels = vmi_labels(vmi)
    return {
        "apiVersion": KUBEVIRT_API,
        "kind": "VirtualMachineInstance",
        "metadata": _compact({"name": vmi.name, "uid": vmi.uid, "creationTimestamp": timestamp(vmi.created_at),
                              "labels": labels,
                              "ownerReferences": _owner(KUBEVIRT_API, "VirtualMachineInstanceReplicaSet", vmi.owner)}),
        "spec": _with_firmware_uuid(vmi_spec(vmi.spec), firmware_uuid(vmi.spec)),
        "status": _compact({
            "phase": vmi.phase.value,
            "nodeName": vmi.node_name,
            "reason": vmi.reason,
            "conditions": [condition(c) for c in vmi.conditions] + _live_migratable(vmi),
            "interfaces": [_compact({"name": i.name, "ipAddress": i.ip_address, "ipAddresses": list(i.ip_addresses),
                                     "mac": i.mac}) for i in vmi.interfaces],
            "phaseTransitionTimestamps": _transitions(vmi),
            "migrationState": _migration_state(vmi.migration_state),
            "volumeStatus": [_volume_status(v) for v in vmi.volume_status],
            # virtbus's own, which KubeVirt has no field for: the launcher (virt-launcher's process), a
            # stop on its way (KubeVirt deletes the VMI instead), the guest said it is up
            "launcherPid": vmi.launcher_pid,
            "stopRequested": vmi.stop_requested or None,
            "guestOSReady": vmi.guest_os_ready or None,
            # the launch's stages (bench/lane.py): its launcher's process began, and was ready
            "launcherStartedAt": timestamp(vmi.launcher_started_at),
            "launcherReadyAt": timestamp(vmi.launcher_ready_at),
        }),
    }


def _volume_status(status: VolumeStatus) -> Obj:
    """KubeVirt's status.volumeStatus entry: a hotplugged volume's carries its phase and hotplugVolume (no
    attachment pod here: its node's launcher attaches it)."""
    entry = _compact({"name": status.name, "target": status.target,
                      "phase": status.phase.value if status.phase else None, "reason": status.reason,
                      "message": status.message})
    return {**entry, "hotplugVolume": {}} if status.hotplug else entry


def _migration_state(state: MigrationState | None) -> Obj | None:
    """KubeVirt's status.migrationState: the migration under way or the last one."""
    if state is None:
        return None
    return _compact({
        "migrationUid": state.migration_uid, "migrationName": state.migration_name,
        "sourceNode": state.source_node, "targetNode": state.target_node,
        "targetNodeAddress": state.target.address if state.target else None,
        "startTimestamp": timestamp(state.start_timestamp), "endTimestamp": timestamp(state.end_timestamp),
        "completed": state.phase is MigrationPhase.SUCCEEDED or None,
        "failed": state.phase is MigrationPhase.FAILED or None,
        "abortRequested": state.abort_requested or None,
        "mode": "PreCopy", "phase": state.phase.value, "failureReason": state.reason or None,
        "migrationConfiguration": _migration_options(state.options),
        "migrationPolicyName": state.policy or None})


def _migration_options(options: MigrationOptions) -> Obj:
    """KubeVirt's migrationState.migrationConfiguration: the settings the migration runs with."""
    bandwidth = options.bandwidth_per_migration
    return {"allowAutoConverge": options.allow_auto_converge, "allowPostCopy": False,
            "bandwidthPerMigration": format_bytes(bandwidth) if bandwidth else "0Mi",
            "completionTimeoutPerGiB": options.completion_timeout_per_gib, "progressTimeout": options.progress_timeout}


def _owner(api_version: str, kind: str, name: str | None) -> list[Obj]:
    """Kubernetes' ownerReferences: the replica set or pool that made it, and deletes it with itself."""
    return [{"apiVersion": api_version, "kind": kind, "name": name, "controller": True}] if name else []


def _live_migratable(vmi: VMI) -> list[Obj]:
    """KubeVirt's LiveMigratable condition of a running instance: whether its spec lets it move
    (``virtbus migrate``), and if not, why, in KubeVirt's reasons (proto.migrations)."""
    if vmi.phase is not Phase.RUNNING:
        return []
    why = migrations.live_migratable(vmi)
    if why is None:
        return [{"type": "LiveMigratable", "status": "True"}]
    reason, message = why
    return [{"type": "LiveMigratable", "status": "False", "reason": reason, "message": message}]


def condition(cond: Condition) -> Obj:
    return _compact({"type": cond.type, "status": cond.status, "reason": cond.reason, "message": cond.message,
                     "lastTransitionTime": timestamp(cond.last_transition_time)})


def _transitions(vmi: VMI) -> list[Obj]:
    """KubeVirt's phaseTransitionTimestamps, from the times virtbus keeps: created, started, finished."""
    marks = [(Phase.PENDING, vmi.created_at), (Phase.RUNNING, vmi.started_at),
             (vmi.phase if vmi.phase in FINAL_PHASES else None, vmi.finished_at)]
    return [{"phase": phase.value, "phaseTransitionTimestamp": timestamp(at)}
            for phase, at in marks if phase is not None and at]


# --- VirtualMachine


def vm_object(view: VMView) -> Obj:
    vm = view.vm
    obj = vm_manifest(vm.spec)
    # no uid: a virtbus VM has none (its instances do)
    # the manifest's own (labels, the high-availability annotation), then what the record adds
    obj["metadata"] = _compact({**obj["metadata"], "creationTimestamp": timestamp(vm.created_at),
                                "generation": vm.generation, "resourceVersion": str(view.revision),
                                "ownerReferences": _owner("pool.kubevirt.io/v1alpha1", "VirtualMachinePool", vm.owner)})
    obj["status"] = _compact({
        "printableStatus": view.printable_status,
        # KubeVirt leaves both out when false; printed anyway, so a reader need not know that
        "created": view.vmi is not None,
        # the READY column, as in `virtbus get vms`
        "ready": view.printable_status == "Running" and view.vmi is not None and is_ready(view.vmi),
        "conditions": [*([_failure(vm)] if vm.failures else []),
                       *([_restart_required()] if restart_required(vm.spec, view.vmi) else [])],
        "startFailure": _compact({"consecutiveFailCount": vm.failures,
                                  "retryAfterTimestamp": timestamp(vm.next_start_at)}) if vm.failures else None,
        "stateChangeRequests": _state_change_requests(vm),
    })
    return obj


def _failure(vm: VM) -> Obj:
    """The crash loop's last failure, as a condition: KubeVirt's startFailure has no room for the why."""
    return _compact({"type": "Failure", "status": "True", "reason": "InstanceFailed", "message": vm.last_failure})


def _restart_required() -> Obj:
    return {"type": RESTART_REQUIRED, "status": "True", "message": RESTART_REQUIRED_MESSAGE}


def _state_change_requests(vm: VM) -> list[Obj]:
    """virtctl's start and restart not yet acted on, queued as KubeVirt queues them."""
    if vm.restart_of:  # a restart is: stop that instance, then start
        return [{"action": "Stop", "uid": vm.restart_of}, {"action": "Start"}]
    return [{"action": "Start"}] if vm.start_requested else []


# --- Node


def node_object(view: NodeView) -> Obj:
    node = view.node
    resources = {"cpu": str(node.cpus), "memory": format_bytes(node.memory),
                 **({KVM_RESOURCE: KVM_DEVICES} if node.kvm else {})}
    ready = "True" if view.ready else "False"
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": _compact({
            "name": node.name,
            "labels": dict(node.labels),
            "creationTimestamp": timestamp(node.started_at),
            # What virtbus adds, in annotations: they change with every VMI, so are no labels (which are
            # for selecting); kubectl shows the allocation only in `describe node`, which is no object.
            "annotations": {
                f"{ANNOTATIONS}allocated-cpu": str(view.allocated_cpus),
                # what the cluster's cpuAllocationRatio lets it hold (KubeVirt's CR, proto.clusterconfig)
                **({f"{ANNOTATIONS}vcpu-capacity": str(view.vcpu_capacity)} if view.vcpu_capacity else {}),
                f"{ANNOTATIONS}allocated-memory": format_bytes(view.allocated_memory),
                f"{ANNOTATIONS}vmis": str(view.vmis),
                f"{ANNOTATIONS}kvm": "true" if node.kvm else "false",
                # bridge networks on a VLAN run here (servicekit.vlanports)
                f"{ANNOTATIONS}vlan-access-ports": "true" if node.vlan_access_ports else "false",
            },
        }),
        "spec": _compact({"podCIDR": node.pod_cidr, "podCIDRs": [node.pod_cidr] if node.pod_cidr else [],
                          # kubectl cordon's field and the taint that comes with it; an admin's taints
                          **({"unschedulable": True} if node.unschedulable else {}),
                          "taints": [{"key": t.key, **({"value": t.value} if t.value else {}), "effect": t.effect}
                                     for t in ([UNSCHEDULABLE] if node.unschedulable else []) + node.taints]}),
        "status": {
            "addresses": [*([{"type": "InternalIP", "address": node.address}] if node.address else []),
                          {"type": "Hostname", "address": node.name}],
            "capacity": resources,
            "allocatable": dict(resources),  # virtbus reserves nothing beyond what the node offers
            "conditions": [_compact({
                "type": "Ready", "status": ready,
                "reason": "HandlerReady" if view.ready else "HandlerNotReady",  # kubelet's are KubeletReady...
                "message": "the handler is posting heartbeats" if view.ready
                           else "the handler stopped posting heartbeats",
                "lastHeartbeatTime": timestamp(node.heartbeat),
            })],
        },
    }
