"""What a value read back from a KV bucket must be, with the API's rules: one validator per stored type.

Anyone who reaches NATS can write a bucket, so a decoded value proves only its shape. Before a key or
a value reaches a path, an interface name, a rule, a route, XML or a subprocess, ``check(kind, key,
value)`` holds it to the same rules the API applied when it stored it, and to its key (a VMI stored
under ``/`` is not the VMI it names). A failure is a ``BadStoredValue`` that the store sets aside.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from proto import (
    clusterconfig,
    ipam,
    labelfilter,
    migrationpolicies,
    migrations,
    netcheck,
    priorities,
    subjects,
    taints,
)
from proto.clones import PREFIX_TARGET_NAME, RANDOMIZE_NAMES, SOURCE_SNAPSHOT, SOURCE_VM, VMClone
from proto.errors import ApiError, Code
from proto.instancetypes import KINDS as INSTANCETYPE_KINDS
from proto.instancetypes import MAX_GUEST_CPUS, Instancetype
from proto.labels import check_labels
from proto.nodevmis import NodeVmi
from proto.preferences import Preference
from proto.preferences import check as check_preference
from proto.routes import Ingress, Route, check_ingress, check_route
from proto.services import cluster_ip_in_range
from proto.snapshots import VMSnapshot, VolumeSnapshot, check_taker
from proto.spec import NetworkAttachment, VMSpec
from proto.state import (
    VM,
    VMI,
    Endpoints,
    Exposure,
    FloatingIP,
    Lease,
    MigrationState,
    Node,
    NodeLease,
    PersistentVolume,
    Service,
    VmiLease,
)
from proto.subjects import InvalidToken, is_dns1123_label, vmi_lease_parts
from proto.validation import check_name, validate_network, validate_vm, validate_volume_fields
from proto.workloads import Pool, ReplicaSet, check_pool, check_replicaset

MAX_NODE_CPUS = 4096
MAX_TEXT = 32 * 1024  # reasons, messages: shown to people, never parsed; libvirt errors run long
# ipam keys: nodecidr.<index>, podips.<node>, net.<network>, svcip.<a-b-c-d> (a Service's virtual IP)
_IPAM_KEY = re.compile(r"^(nodecidr\.(?P<index>0|[1-9][0-9]{0,3})|(podips|net|svcip)\.(?P<name>.+))$")


class BadStoredValue(Exception):
    """A KV entry that did not decode or did not pass its validator: set aside, never used."""

    def __init__(self, bucket: str, key: str, reason: str) -> None:
        super().__init__(f"{bucket}/{key!r}: {reason}")
        self.bucket = bucket
        self.key = key
        self.reason = reason


Validator = Callable[[str, Any], None]


def _key_is(key: str, expected: str, what: str) -> None:
    if key != expected:
        raise ApiError(Code.INVALID, f"the key {key!r} is not the {what} {expected!r} it holds", "key")


def _text(value: str, field: str) -> None:
    if len(value) > MAX_TEXT:
        raise ApiError(Code.INVALID, f"over {MAX_TEXT} characters", field)


def _name_key(key: str) -> None:
    check_name(key, "key", "key")


def check_vm(key: str, vm: VM) -> None:
    _name_key(key)
    validate_vm(vm.spec)
    _key_is(key, vm.spec.name, "VM name")
    if vm.restart_of is not None:
        check_name(vm.restart_of, "restartOf", "uid")
    if vm.failures < 0 or vm.generation < 1:
        raise ApiError(Code.INVALID, "failures and generation cannot be negative", "failures")
    _text(vm.last_failure, "lastFailure")
    if vm.owner is not None:
        check_name(vm.owner, "owner", "pool name")


class _CheckedSpecs:
    """The VMI specs this process already held to the rules: the last one checked for each VMI name.
    A VMI's spec is frozen at creation, so a bind, a status report or a node's copy carries the same
    spec object on, and each change a watch decodes afresh carries an equal one: each would otherwise
    be checked again (four times per VM in the binder, a tenth of its CPU). An equal spec is as valid
    as the one checked (the rules read only the spec), and msgspec compares two in C for a fraction of
    the rules' cost. Bounded, the oldest names forgotten first: 10,000 VMIs created at once overran
    8,192 spec objects, and each bind then missed and pushed out the next one to bind."""

    def __init__(self, size: int = 16384) -> None:
        self._specs: dict[str, VMSpec] = {}
        self._size = size

    def check(self, spec: VMSpec) -> None:
        known = self._specs.get(spec.name)
        if known is not None and (known is spec or known == spec):
            return
        validate_vm(spec)
        if known is None and len(self._specs) >= self._size:
            del self._specs[next(iter(self._specs))]
        self._specs[spec.name] = spec


_checked_specs = _CheckedSpecs()


def check_vmi(key: str, vmi: VMI) -> None:
    _name_key(key)
    check_name(vmi.name, "name")
    _key_is(key, vmi.name, "VMI name")
    check_name(vmi.uid, "uid", "uid")  # in argv, cloud-init meta-data, the domain's uuid, pidfiles
    _checked_specs.check(vmi.spec)
    _key_is(vmi.name, vmi.spec.name, "name of the spec")
    if vmi.node_name is not None:
        check_name(vmi.node_name, "nodeName", "node name")
    if vmi.launcher_pid is not None and vmi.launcher_pid < 1:
        raise ApiError(Code.INVALID, f"{vmi.launcher_pid} is not a process id", "launcherPid")
    _text(vmi.reason, "reason")
    if vmi.owner is not None:
        check_name(vmi.owner, "owner", "replica set name")
    if vmi.pause_generation < 0 or vmi.reboot_requests < 0:
        raise ApiError(Code.INVALID, "pauseGeneration and rebootRequests cannot be negative", "pauseGeneration")
    if vmi.stop_grace_period is not None and vmi.stop_grace_period < 0:
        raise ApiError(Code.INVALID, "stopGracePeriod cannot be negative", "stopGracePeriod")
    if vmi.priority is not None and not priorities.LOWEST_PRIORITY <= vmi.priority <= priorities.HIGHEST_PRIORITY:
        raise ApiError(Code.INVALID, f"priority {vmi.priority} is out of range", "priority")
    for i, cond in enumerate(vmi.conditions):
        _text(cond.message, f"conditions[{i}].message")
    for i, iface in enumerate(vmi.interfaces):
        netcheck.interface_status(iface.name, iface.ip_address, iface.ip_addresses, iface.mac, f"interfaces[{i}]")
    if vmi.migration_state is not None:
        check_migration_state(vmi.migration_state)


def check_migration_state(state: MigrationState) -> None:
    """A target's address, port and directory become a connection and the paths of a domain's XML."""
    check_name(state.migration_uid, "migrationState.migrationUid", "uid")
    migrations.check_name(state.migration_name, "migrationState.migrationName")
    check_name(state.source_node, "migrationState.sourceNode", "node name")
    if state.target_node is not None:
        check_name(state.target_node, "migrationState.targetNode", "node name")
    _text(state.reason, "migrationState.reason")
    clusterconfig.check_migration_options(state.options, "migrationState.options")
    if state.policy:
        check_name(state.policy, "migrationState.policy", "MigrationPolicy name")
    target = state.target
    if target is not None:
        netcheck.host_address(target.address, "migrationState.target.address")
        migrations.check_target(target.port, target.node_dir)
        for i, iface in enumerate(target.interfaces):
            netcheck.interface_status(iface.name, iface.ip_address, iface.ip_addresses, iface.mac,
                                      f"migrationState.target.interfaces[{i}]")


def check_migration(key: str, item: migrations.Migration) -> None:
    _name_key(key)
    _key_is(key, item.name, "migration name")
    migrations.check_name(item.name, "name")
    check_name(item.vmi_name, "vmiName", "VMI name")
    check_name(item.uid, "uid", "uid")
    check_labels(item.labels, "labels")
    for node, field in ((item.source_node, "sourceNode"), (item.target_node, "targetNode")):
        if node is not None:
            check_name(node, field, "node name")
    _text(item.reason, "reason")


def check_node(key: str, node: Node) -> None:
    _name_key(key)
    check_name(node.name, "name")
    _key_is(key, node.name, "node name")
    if not 1 <= node.cpus <= MAX_NODE_CPUS or node.memory < 0:
        raise ApiError(Code.INVALID, f"{node.cpus} CPUs and {node.memory} bytes are not a node", "cpus")
    check_labels(node.labels, "labels")
    check_labels(node.admin_labels, "adminLabels")
    if not node.admin_labels.items() <= node.labels.items():
        raise ApiError(Code.INVALID, "an admin's labels are among the node's labels", "adminLabels")
    if len(node.taints) > taints.MAX_TAINTS:
        raise ApiError(Code.INVALID, f"at most {taints.MAX_TAINTS} taints", "taints")
    for i, taint in enumerate(node.taints):
        taints.check_taint(taint, f"taints[{i}]")
    if node.address is not None:
        netcheck.host_address(node.address, "address")
    if node.pod_cidr is not None:
        netcheck.pod_cidr(node.pod_cidr, "podCidr")
    for i, bridge in enumerate(node.allowed_bridges):
        netcheck.ifname(bridge, f"allowedBridges[{i}]")
    for i, bridge in enumerate(node.ovs_bridges):
        netcheck.ifname(bridge, f"ovsBridges[{i}]")
    if node.free_disk is not None and node.free_disk < 0:
        raise ApiError(Code.INVALID, "free disk cannot be negative", "freeDisk")


def check_exposure(key: str, exposure: Exposure) -> None:
    if exposure.service is None:
        check_name(exposure.vm, "vm", "VM name")
    else:
        check_name(exposure.service, "service", "Service name")
        if exposure.vm:
            raise ApiError(Code.INVALID, "a Service's node port belongs to no VM", "vm")
    netcheck.protocol(exposure.protocol, "protocol")
    netcheck.port(exposure.port, "port")
    netcheck.node_port(exposure.node_port, "nodePort")
    _key_is(key, exposure.key, "key of exposure")


def check_floating_ip(key: str, fip: FloatingIP) -> None:
    netcheck.host_address(fip.address, "address")
    check_name(fip.network, "network", "network name")
    if fip.vm is not None:
        check_name(fip.vm, "vm", "VM name")
    if fip.service is not None:
        check_name(fip.service, "service", "Service name")
        if fip.vm is not None:
            raise ApiError(Code.INVALID, "a floating IP serves a VM or a Service, not both", "service")
    _key_is(key, fip.key, "key of floating IP")


def check_network(key: str, att: NetworkAttachment) -> None:
    _name_key(key)
    validate_network(att)
    _key_is(key, att.name, "network name")


def _ipam_key(key: str) -> None:
    match = _IPAM_KEY.fullmatch(key)
    if (match is None or (match["name"] is not None and not is_dns1123_label(match["name"]))
            or (match["index"] is not None and int(match["index"]) >= ipam.NODE_NETWORKS)):
        raise ApiError(Code.INVALID, f"{key!r} is not an ipam key (nodecidr.N, podips.NODE, net.NETWORK)", "key")


def check_cidr_claim(key: str, owner: str) -> None:
    """ipam ``nodecidr.N``: the node holding the Nth /24; ``svcip.A``: the Service holding address A."""
    _ipam_key(key)
    check_name(owner, "value", "node name" if key.startswith("nodecidr.") else "Service name")


def check_address_table(key: str, table: dict[str, str]) -> None:
    """ipam ``podips.NODE`` / ``net.NETWORK``: owner VM -> the address it holds."""
    _ipam_key(key)
    for owner, address in table.items():
        check_name(owner, "value", "VM name")
        netcheck.host_address(address, f"value.{owner}")


def check_lease(key: str, lease: Lease) -> None:
    _name_key(key)
    check_name(lease.holder, "holder", "holder")
    if not 0 < lease.duration <= 3600:
        raise ApiError(Code.INVALID, f"a lease of {lease.duration} seconds", "duration")


def check_persistent_volume(key: str, volume: PersistentVolume) -> None:
    _name_key(key)
    _key_is(key, volume.name, "volume name")
    validate_volume_fields(volume.name, volume.size, volume.image, volume.node)
    check_name(volume.uid, "uid", "uid")  # in the file's name
    if volume.owner_vm is not None:
        check_name(volume.owner_vm, "ownerVm", "VM name")
    _check_volume_population(volume)


def _check_volume_population(volume: PersistentVolume) -> None:
    if volume.snapshot is not None:
        check_name(volume.snapshot, "snapshot", "snapshot name")
    if volume.previous_uid is not None:
        check_name(volume.previous_uid, "previousUid", "uid")
    _text(volume.reason, "reason")
    if volume.progress.done < 0 or volume.progress.total < 0:
        raise ApiError(Code.INVALID, "progress cannot be negative", "progress")


def check_volume_snapshot(key: str, snap: VolumeSnapshot) -> None:
    _name_key(key)
    _key_is(key, snap.name, "snapshot name")
    for field, name in (("uid", snap.uid), ("volume", snap.volume), ("volumeUid", snap.volume_uid),
                        ("node", snap.node)):
        check_name(name, field)
    validate_volume_fields(snap.volume, snap.volume_size, None, snap.node)
    if snap.group is not None:
        check_name(snap.group, "group")
    if snap.taken_by:
        check_taker(snap.taken_by)
    _text(snap.reason, "reason")
    _text(snap.digest, "digest")
    if snap.size < 0 or snap.progress.done < 0 or snap.progress.total < 0:
        raise ApiError(Code.INVALID, "sizes cannot be negative", "size")


def check_vm_snapshot(key: str, snap: VMSnapshot) -> None:
    _name_key(key)
    _key_is(key, snap.name, "VM snapshot name")
    check_name(snap.uid, "uid")
    check_name(snap.vm, "vm", "VM name")
    for volume, part in snap.volumes.items():
        check_name(volume, "volumes", "volume name")
        check_name(part, f"volumes.{volume}", "snapshot name")
    if snap.spec is not None:
        validate_vm(snap.spec)  # a clone of the snapshot is made of it


def check_vm_clone(key: str, clone: VMClone) -> None:
    _name_key(key)
    _key_is(key, clone.name, "clone name")
    for field in ("uid", "source", "target"):
        check_name(getattr(clone, field), field)
    if clone.snapshot is not None:
        check_name(clone.snapshot, "snapshot", "snapshot name")
    if clone.source_kind not in (SOURCE_VM, SOURCE_SNAPSHOT):
        raise ApiError(Code.INVALID, f"a clone's source is a {SOURCE_VM} or a {SOURCE_SNAPSHOT}", "sourceKind")
    if clone.volume_name_policy not in (RANDOMIZE_NAMES, PREFIX_TARGET_NAME):
        raise ApiError(Code.INVALID, "no such volumeNamePolicy", "volumeNamePolicy")
    for volume, copy in clone.volumes.items():
        check_name(volume, "volumes", "volume name")
        check_name(copy, f"volumes.{volume}", "volume name")
    labelfilter.check(clone.label_filters, "labelFilters")
    labelfilter.check(clone.annotation_filters, "annotationFilters")
    labelfilter.check(clone.template_label_filters, "templateLabelFilters")
    for iface, mac in clone.new_mac_addresses.items():
        _text(iface, "newMacAddresses")
        _text(mac, f"newMacAddresses.{iface}")
    _text(clone.new_smbios_serial or "", "newSMBiosSerial")
    _text(clone.reason, "reason")


def check_priority_class(key: str, value: priorities.PriorityClass) -> None:
    _key_is(key, value.name, "PriorityClass name")
    priorities.check(value)


def check_migration_policy(key: str, value: migrationpolicies.MigrationPolicy) -> None:
    _key_is(key, value.name, "MigrationPolicy name")
    migrationpolicies.check(value)


def check_instancetype(key: str, value: Instancetype) -> None:
    _key_is(key, value.name, "instancetype name")
    check_name(key.replace(".", "-"), "key", "instancetype name")  # u1.small: dots as KubeVirt's names have
    if not 1 <= value.cpus <= MAX_GUEST_CPUS or value.common or value.kind not in INSTANCETYPE_KINDS:
        raise ApiError(Code.INVALID, f"instancetype {key} is not a user-defined one virtbus could have stored", "cpus")
    _text(value.memory, "memory")


def _vmi_lease_key(key: str) -> None:
    try:
        vmi_lease_parts(key)
    except InvalidToken as exc:
        raise ApiError(Code.INVALID, str(exc), "key") from None


def check_vmi_lease(key: str, lease: VmiLease) -> None:
    _vmi_lease_key(key)
    check_name(lease.uid, "uid", "uid")
    if lease.renewals < 0:
        raise ApiError(Code.INVALID, "renewals cannot be negative", "renewals")


def check_node_vmi(key: str, copy: NodeVmi) -> None:
    """A copy is under its own node's and name's key: a handler acts on no VMI filed elsewhere."""
    _vmi_lease_key(key)
    node, name = vmi_lease_parts(key)
    check_vmi(name, copy.vmi)
    if node != migrations.target_of(copy.vmi):  # the node a migration moves it to has a copy too
        _key_is(node, copy.vmi.node_name or "", "VMI's node")
    if copy.revision < 1:
        raise ApiError(Code.INVALID, "a copy's revision is at least 1", "revision")


def check_node_lease(key: str, lease: NodeLease) -> None:
    _name_key(key)
    if not lease.renewed_at >= 0:
        raise ApiError(Code.INVALID, "a lease's time cannot be negative", "renewedAt")


def check_service(key: str, service: Service) -> None:
    _name_key(key)
    _key_is(key, service.name, "Service name")
    check_name(service.uid, "uid", "uid")
    check_labels(service.selector, "selector")
    check_labels(service.labels, "labels")
    if not service.headless:
        cluster_ip_in_range(service.cluster_ip, "clusterIP")
    if service.load_balancer_ip is not None:
        netcheck.host_address(service.load_balancer_ip, "loadBalancerIP")
    for i, ip in enumerate(service.external_ips):
        netcheck.host_address(ip, f"externalIPs[{i}]")
    for i, p in enumerate(service.ports):
        netcheck.port(p.port, f"ports[{i}].port")
        netcheck.port(p.target_port, f"ports[{i}].targetPort")
        netcheck.protocol(p.protocol, f"ports[{i}].protocol")
        if p.node_port is not None:
            netcheck.node_port(p.node_port, f"ports[{i}].nodePort")


def check_endpoints(key: str, endpoints: Endpoints) -> None:
    _name_key(key)
    _key_is(key, endpoints.name, "Endpoints name")
    for i, subset in enumerate(endpoints.subsets):
        for j, a in enumerate(subset.addresses):
            netcheck.host_address(a.ip, f"subsets[{i}].addresses[{j}].ip")
            for value, what in ((a.vmi, "VMI name"), (a.node, "node name"), (a.hostname, "hostname")):
                if value is not None:
                    check_name(value, f"subsets[{i}].addresses[{j}]", what)
        for j, p in enumerate(subset.ports):
            netcheck.port(p.port, f"subsets[{i}].ports[{j}].port")
            netcheck.protocol(p.protocol, f"subsets[{i}].ports[{j}].protocol")


def check_cluster_config(key: str, config: clusterconfig.ClusterConfig) -> None:
    _key_is(key, subjects.CONFIG_KUBEVIRT, "cluster configuration")
    clusterconfig.check(config)


def _no_checks(key: str, value: object) -> None:
    return None


def check_key(kind: object, key: str) -> None:
    """The key alone, as a watch sees it with a deletion too: a label, or an ipam key."""
    if kind is str or kind == dict[str, str]:
        _ipam_key(key)
    elif kind is VmiLease or kind is NodeVmi:
        _vmi_lease_key(key)
    elif kind is Instancetype or kind is Preference:
        check_name(key.replace(".", "-"), "key", "instancetype or preference name")
    else:
        _name_key(key)


# Keyed by what a Bucket decodes to; the ipam bucket is read as both str and dict[str, str].
_VALIDATORS: dict[object, Validator] = {
    VM: check_vm, VMI: check_vmi, Node: check_node, Exposure: check_exposure, FloatingIP: check_floating_ip,
    NetworkAttachment: check_network, Lease: check_lease, VmiLease: check_vmi_lease, NodeVmi: check_node_vmi,
    NodeLease: check_node_lease,
    PersistentVolume: check_persistent_volume, VolumeSnapshot: check_volume_snapshot, VMSnapshot: check_vm_snapshot,
    Instancetype: check_instancetype, str: check_cidr_claim, priorities.PriorityClass: check_priority_class,
    migrations.Migration: check_migration, migrationpolicies.MigrationPolicy: check_migration_policy,
    ReplicaSet: check_replicaset, Pool: check_pool, Preference: check_preference, VMClone: check_vm_clone,
    Service: check_service, Endpoints: check_endpoints, Route: check_route, Ingress: check_ingress,
    dict[str, str]: check_address_table, clusterconfig.ClusterConfig: check_cluster_config,
}


def validator(kind: object) -> Validator:
    """The validator of a stored type. A type without one is a programming error: storing a new type
    means writing its rules here first (TypeError otherwise)."""
    try:
        return _VALIDATORS[kind]
    except KeyError:
        raise TypeError(f"no validator for stored values of type {kind!r}: add one to proto.stored") from None


def has_validator(kind: object) -> bool:
    return kind in _VALIDATORS


# What each bucket every node follows whole (subjects.FOLLOWED_BUCKETS) holds, for who opens them all
# (the hollow nodes of bench/, tests)
FOLLOWED_KINDS: dict[str, type] = {
    subjects.BUCKET_NODES: Node, subjects.BUCKET_NETWORKS: NetworkAttachment, subjects.BUCKET_EXPOSURES: Exposure,
    subjects.BUCKET_FLOATING_IPS: FloatingIP, subjects.BUCKET_VOLUMES: PersistentVolume,
    subjects.BUCKET_SNAPSHOTS: VolumeSnapshot, subjects.BUCKET_SERVICES: Service, subjects.BUCKET_ENDPOINTS: Endpoints,
    subjects.BUCKET_ROUTES: Route, subjects.BUCKET_INGRESSES: Ingress,
}
