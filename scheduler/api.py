"""The api service: request/reply on ``virtbus.api.<kind>.<verb>``, writing desired state to KV.

It validates everything before it writes anything, so a bad request changes nothing.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from functools import partial

import msgspec
import nats.js.errors
from nats.js.api import ObjectInfo

from proto import imagefacts, resources, selector, subjects
from proto.api import (
    Ack,
    ImageInfo,
    ImageList,
    ListRequest,
    NameRequest,
    NodeList,
    NodeView,
    PowerRequest,
    SelectRequest,
    StartRequest,
    VMIList,
    VMIReply,
    VMList,
    VMReply,
    VMView,
    decode_request,
)
from proto.errors import ApiError, Code
from proto.manifest import instance_path, load_manifest, parse_instance, parse_manifest_obj
from proto.spec import EvictionStrategy, NetworkAttachment, RunStrategy, VMSpec
from proto.state import FINAL_PHASES, VM, VMI, Node, as_started
from proto.validation import check_grace_period, validate_image_reference
from scheduler import placement, vmdelete
from scheduler.clones import CloneApi
from scheduler.clusterconfig import ClusterConfigApi, ClusterConfigWatch
from scheduler.exposures import ExposureApi
from scheduler.floatingips import FloatingIPApi
from scheduler.hotplug import HotplugApi
from scheduler.instancetypes import InstancetypeApi
from scheduler.migrationapi import MigrationApi
from scheduler.migrationpolicies import MigrationPolicyApi
from scheduler.networkapi import NetworkApi
from scheduler.nodemaintenance import NodeMaintenanceApi
from scheduler.nodemarks import NodeMarkApi
from scheduler.pools import PoolApi
from scheduler.power import PowerApi
from scheduler.preferences import PreferenceApi
from scheduler.priorityclasses import PriorityClassApi
from scheduler.replicasets import ReplicaSetApi
from scheduler.routeapi import RouteApi
from scheduler.services import ServiceApi
from scheduler.snapshots import SnapshotApi
from scheduler.stopping import stop_vmi
from scheduler.vmplan import printable_status
from scheduler.volumes import VolumeApi
from servicekit.endpoints import Endpoint
from servicekit.store import Entry, Store


class Api:
    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time,
                 readiness: Callable[[list[Node]], Mapping[str, bool]] | None = None,
                 config: ClusterConfigWatch | None = None) -> None:
        """readiness: which nodes are Ready, as this process's node watch judges them on its own
        clock (scheduler.nodewatch); without one, a guess from the heartbeats' age. config: this
        process's watch of the cluster's configuration; without one, it is read when needed."""
        self.store = store
        self.clock = clock
        self.readiness = readiness or (lambda nodes: placement.ready_by_heartbeat(nodes, self.clock()))
        self.exposures = ExposureApi(store, clock=clock)
        self.fips = FloatingIPApi(store)
        self.volumes = VolumeApi(store, clock=clock)
        self.snapshots = SnapshotApi(store, clock=clock)
        self.clones = CloneApi(store, clock=clock)
        self.instancetypes = InstancetypeApi(store)
        self.cluster = ClusterConfigApi(store, watch=config, clock=clock)
        self.power = PowerApi(store)
        self.preferences = PreferenceApi(store)
        self.replicasets = ReplicaSetApi(store, clock=clock)
        self.pools = PoolApi(store, expand=self._expand, clock=clock)
        self.services = ServiceApi(store, clock=clock)
        self.network = NetworkApi(store)
        self.routes = RouteApi(store, clock=clock)
        self.migrations = MigrationApi(store, clock=clock)
        self.maintenance = NodeMaintenanceApi(store, clock=clock, ready=self._node_ready,
                                              cluster_strategy=self._cluster_eviction_strategy,
                                              evacuate=self.migrations.evacuate)
        self.node_marks = NodeMarkApi(store)
        self.priority_classes = PriorityClassApi(store)
        self.migration_policies = MigrationPolicyApi(store)
        self.hotplug = HotplugApi(store, self.volumes)

    def endpoints(self) -> list[Endpoint]:
        table: dict[tuple[str, str], Callable[[bytes], object]] = {
            ("vm", "create"): self.vm_create, ("vm", "apply"): self.vm_apply,
            ("vm", "get"): self.vm_get, ("vm", "list"): self.vm_list, ("vm", "delete"): self.vm_delete,
            ("vm", "start"): self.vm_start, ("vm", "stop"): self.vm_stop,
            ("vm", "restart"): self.vm_restart,
            ("vm", "pause"): self.power.pause, ("vm", "unpause"): self.power.unpause,
            ("vm", "soft-reboot"): self.power.soft_reboot,
            ("vmi", "pause"): partial(self.power.pause, kind="vmi"),
            ("vmi", "unpause"): partial(self.power.unpause, kind="vmi"),
            ("vmi", "soft-reboot"): partial(self.power.soft_reboot, kind="vmi"),
            ("vm", "expose"): self.exposures.expose, ("vm", "unexpose"): self.exposures.unexpose,
            ("exposure", "list"): self.exposures.list,
            ("fip", "create"): self.fips.create, ("fip", "attach"): self.fips.attach,
            ("fip", "detach"): self.fips.detach, ("fip", "delete"): self.fips.delete, ("fip", "list"): self.fips.list,
            ("vmi", "get"): self.vmi_get, ("vmi", "list"): self.vmi_list,
            ("vmi", "apply"): self.vmi_apply, ("vmi", "delete"): self.vmi_delete,
            ("node", "list"): self.node_list,
            ("image", "list"): self.image_list, ("image", "delete"): self.image_delete,
            ("volume", "create"): self.volumes.create, ("volume", "get"): self.volumes.get,
            ("volume", "list"): self.volumes.list_all, ("volume", "delete"): self.volumes.delete,
            ("volume", "resize"): self.volumes.resize,
            ("instancetype", "apply"): self.instancetypes.apply, ("instancetype", "get"): self.instancetypes.get,
            ("instancetype", "list"): self.instancetypes.list_all,
            ("instancetype", "delete"): self.instancetypes.delete,
            **self.snapshots.table(), **self.clones.table(), **self.replicasets.table(), **self.pools.table(),
            **self.preferences.table(),
            **self.services.table(), **self.routes.table(), **self.cluster.table(), **self.network.table(),
            **self.maintenance.table(), **self.node_marks.table(), **self.priority_classes.table(),
            **self.migrations.table(), **self.migration_policies.table(), **self.hotplug.table(),
        }
        return [Endpoint(f"{kind}-{verb}", subjects.api(kind, verb), handler)  # type: ignore[arg-type]
                for (kind, verb), handler in table.items()]

    # --- VMs -------------------------------------------------------------------------------------
    async def _expand(self, manifest: object) -> object:
        """A VM manifest as KubeVirt applies it: its instancetype's size written in, then what its
        preference fills in where the VM said nothing."""
        return await self.preferences.expand(await self.instancetypes.expand(manifest))

    async def _vm_spec(self, body: bytes) -> VMSpec:
        parsed = parse_manifest_obj(await self._expand(load_manifest(body, content_type="json")))
        if not isinstance(parsed, VMSpec):
            raise ApiError(Code.BAD_REQUEST, "this subject takes a VirtualMachine; "
                           f"send a {type(parsed).__name__} to {subjects.api('network', 'apply')}")
        for i, net in enumerate(parsed.networks):
            if net.kind == "multus" and net.network_name and await self.network.networks.get(net.network_name) is None:
                raise ApiError(Code.INVALID, f"network {net.network_name!r} does not exist; apply its "
                               "NetworkAttachmentDefinition first",
                               f"spec.template.spec.networks[{i}].multus.networkName")
        return parsed

    async def _view(self, entry: Entry[VM]) -> VMView:
        return self._view_of(entry, await self.store.vmis.get(entry.key))

    def _view_of(self, entry: Entry[VM], vmi: Entry[VMI] | None) -> VMView:
        vmi_value = vmi.value if vmi else None
        return VMView(vm=entry.value, revision=entry.revision, vmi=vmi_value,
                      printable_status=printable_status(entry.value, vmi_value, self.clock()))

    async def vm_create(self, body: bytes) -> VMReply:
        spec = await self._vm_spec(body)
        alone = await self.store.vmis.get(spec.name)
        if alone is not None and alone.value.standalone:
            raise ApiError(Code.ALREADY_EXISTS, f"a VirtualMachineInstance {spec.name!r} of its own exists; delete it "
                                                "first (virtbus delete vmi NAME)", "metadata.name")
        await self.volumes.for_vm(spec)
        vm = VM(spec=spec, created_at=self.clock())
        try:
            rev = await self.store.vms.create(spec.name, vm)
        except ApiError as exc:
            if exc.code is Code.ALREADY_EXISTS:
                raise ApiError(Code.ALREADY_EXISTS, f"VM {spec.name!r} already exists", "metadata.name") from None
            raise
        # the instance read above is the view's: a VM just created has none of its own yet, and
        # reading it again would be a third round trip per create
        return VMReply(item=self._view_of(Entry(spec.name, vm, rev), alone))

    async def vm_apply(self, body: bytes) -> VMReply:
        """Create, or replace the spec of an existing VM (a running instance keeps its spec)."""
        spec = await self._vm_spec(body)
        existing = await self.store.vms.get(spec.name)
        if existing is None:
            return await self.vm_create(body)
        if existing.value.spec == spec:
            return VMReply(item=await self._view(existing))
        await self.volumes.for_vm(spec)
        # as Kubernetes counts it: a change of the spec, not of the VM's own labels (its metadata)
        relabelled = msgspec.structs.replace(existing.value.spec, vm_labels=spec.vm_labels) == spec
        updated = msgspec.structs.replace(existing.value, spec=spec,
                                          generation=existing.value.generation + (0 if relabelled else 1))
        rev = await self.store.vms.update(spec.name, updated, existing.revision)
        return VMReply(item=await self._view(Entry(spec.name, updated, rev)))

    async def _named_vm(self, body: bytes) -> Entry[VM]:
        name = _name(body)
        return await self.store.vms.require(name, "VM")

    async def vm_get(self, body: bytes) -> VMReply:
        return VMReply(item=await self._view(await self._named_vm(body)))

    async def vm_list(self, body: bytes) -> VMList:
        chosen = selector.parse_text(decode_request(body, SelectRequest).label_selector, "labelSelector")
        entries = sorted(await self.store.vms.items(), key=_key)
        return VMList(items=[await self._view(e) for e in entries if chosen.matches(e.value.spec.vm_labels)])

    async def vm_delete(self, body: bytes) -> Ack:
        entry = await self._named_vm(body)
        volumes = await vmdelete.delete_vm(self.store, entry)  # its node ports, floating IPs, own volumes too
        also = f"; volumes {', '.join(volumes)} deleted with it" if volumes else ""
        return Ack(message=f"VM {entry.key} deleted; its instance is being stopped{also}")

    async def vm_start(self, body: bytes) -> Ack:
        req = decode_request(body, StartRequest)
        entry = await self.store.vms.require(_valid_name(req.name), "VM")
        vm = entry.value
        vmi = await self.store.vmis.get(entry.key)
        active = vmi is not None and vmi.value.phase not in FINAL_PHASES and not vmi.value.stop_requested
        if active:
            return Ack(message=f"VM {entry.key} is already running")
        if vmi is not None and vmi.value.stop_requested and vmi.value.phase not in FINAL_PHASES:
            raise ApiError(Code.CONFLICT, f"VM {entry.key} is still stopping; start it once it has stopped")
        strategy = vm.spec.run_strategy
        # a person asked: start now (paused, if asked: the next instance's guest waits for unpause)
        vm = msgspec.structs.replace(vm, failures=0, next_start_at=0.0, start_paused=req.paused)
        if strategy is RunStrategy.HALTED:
            new = msgspec.structs.replace(vm, spec=msgspec.structs.replace(
                vm.spec, run_strategy=RunStrategy.ALWAYS))
        elif strategy is RunStrategy.MANUAL:  # a finished instance goes first, then a new one starts
            new = msgspec.structs.replace(vm, start_requested=True,
                                          restart_of=vmi.value.uid if vmi is not None else None)
        elif vmi is not None:  # Always / RerunOnFailure with a finished instance: run it again
            new = msgspec.structs.replace(vm, restart_of=vmi.value.uid)
        elif entry.value.next_start_at or req.paused:
            new = vm
        else:
            return Ack(message=f"VM {entry.key} is starting")
        await self.store.vms.update(entry.key, new, entry.revision)
        return Ack(message=f"VM {entry.key} was scheduled to start")

    async def vm_stop(self, body: bytes) -> Ack:
        """As virtctl stop: Always becomes Halted; the other strategies are kept, their instance
        asked to stop (so RerunOnFailure does not rerun it: it ends Succeeded). With a grace period
        (--force --grace-period N), the instance's guest gets no more than N seconds, also when it was
        asked to stop before."""
        req = _power(body)
        entry = await self.store.vms.require(req.name, "VM")
        vm = entry.value
        vmi = await self.store.vmis.get(entry.key)
        if vmi is not None and vmi.value.phase in FINAL_PHASES:
            vmi = None
        forced = f" (forced: its guest has {req.grace_period}s)" if req.grace_period is not None else ""
        if vm.spec.run_strategy in (RunStrategy.MANUAL, RunStrategy.RERUN_ON_FAILURE, RunStrategy.ONCE):
            if vmi is None:
                return Ack(message=f"VM {entry.key} is not running")
            await self._stop_instance(vmi.value, req.grace_period)
            return Ack(message=f"VM {entry.key} was scheduled to stop{forced}")
        if vm.spec.run_strategy is RunStrategy.HALTED:
            if vmi is not None and req.grace_period is not None:  # a stop under way, cut short
                await self._stop_instance(vmi.value, req.grace_period)
                return Ack(message=f"VM {entry.key} is stopping{forced}")
            return Ack(message=f"VM {entry.key} is {'stopping' if vmi else 'not running'}")
        halted = msgspec.structs.replace(vm, start_requested=False, restart_of=None, failures=0, next_start_at=0.0,
                                         spec=msgspec.structs.replace(vm.spec, run_strategy=RunStrategy.HALTED))
        await self.store.vms.update(entry.key, halted, entry.revision)
        if vmi is not None and req.grace_period is not None:
            await self._stop_instance(vmi.value, req.grace_period)
        return Ack(message=f"VM {entry.key} was scheduled to stop{forced}")

    async def _stop_instance(self, vmi: VMI, grace: int | None) -> None:
        uid = vmi.uid
        await self.store.vmis.mutate(vmi.name, lambda v: stop_vmi(v, uid, self.clock(), grace))

    async def vm_restart(self, body: bytes) -> Ack:
        req = _power(body)
        entry = await self.store.vms.require(req.name, "VM")
        vmi = await self.store.vmis.get(entry.key)
        if vmi is None or vmi.value.phase in FINAL_PHASES or vmi.value.stop_requested:
            raise ApiError(Code.INVALID, f"VM {entry.key} is not running; use start")
        new = msgspec.structs.replace(entry.value, restart_of=vmi.value.uid)
        await self.store.vms.update(entry.key, new, entry.revision)
        if req.grace_period is not None:  # the instance's stop, cut short; the controller starts the next
            await self._stop_instance(vmi.value, req.grace_period)
            return Ack(message=f"VM {entry.key} was scheduled to restart (forced: its guest has "
                               f"{req.grace_period}s)")
        return Ack(message=f"VM {entry.key} was scheduled to restart")

    # --- VMIs and nodes ----------------------------------------------------------------------------
    async def vmi_get(self, body: bytes) -> VMIReply:
        name = _name(body)
        return VMIReply(item=(await self.store.vmis.require(name, "VMI")).value)

    async def vmi_apply(self, body: bytes) -> VMIReply:
        """A VirtualMachineInstance on its own: created, or left as it is (its spec cannot change)."""
        spec = parse_instance(body)
        existing = await self.store.vmis.get(spec.name)
        if existing is not None:
            if existing.value.standalone and existing.value.spec == spec:
                return VMIReply(item=existing.value)
            raise ApiError(Code.ALREADY_EXISTS, f"VMI {spec.name!r} already exists; a VMI's spec cannot change",
                           "metadata.name")
        if await self.store.vms.get(spec.name) is not None:
            raise ApiError(Code.ALREADY_EXISTS, f"VM {spec.name!r} exists and its instance has that name",
                           "metadata.name")
        try:
            await self.volumes.for_vm(spec)
        except ApiError as exc:  # it blames the VM's fields; the user wrote a VMI
            raise ApiError(exc.code, exc.message, instance_path(exc.field)) from None
        vmi = VMI(name=spec.name, uid=str(uuid.uuid4()), spec=spec, created_at=self.clock(), standalone=True,
                  **as_started(spec))
        try:
            await self.store.vmis.create(spec.name, vmi)
        except ApiError as exc:
            if exc.code is Code.ALREADY_EXISTS:
                raise ApiError(Code.ALREADY_EXISTS, f"VMI {spec.name!r} already exists", "metadata.name") from None
            raise
        return VMIReply(item=vmi)

    async def vmi_delete(self, body: bytes) -> Ack:
        """A VirtualMachineInstance made on its own is stopped and removed; a VM's is the VM's."""
        name = _name(body)
        entry = await self.store.vmis.require(name, "VMI")
        if not entry.value.standalone:
            raise ApiError(Code.INVALID, f"VMI {name} is VM {name}'s instance: use virtbus stop, restart or delete "
                                         f"{name}", "name")
        uid = entry.value.uid

        def delete(v: VMI) -> VMI | None:
            if v.uid != uid or v.deleting:
                return None
            stopping = stop_vmi(v, uid, self.clock()) or v
            return msgspec.structs.replace(stopping, deleting=True)

        await self.store.vmis.mutate(name, delete)
        return Ack(message=f"VMI {name} is being deleted")

    async def vmi_list(self, body: bytes) -> VMIList:
        chosen = selector.parse_text(decode_request(body, SelectRequest).label_selector, "labelSelector")
        entries = sorted(await self.store.vmis.items(), key=_key)
        return VMIList(items=[e.value for e in entries if chosen.matches(resources.vmi_labels(e.value))])

    async def node_list(self, body: bytes) -> NodeList:
        decode_request(body, ListRequest)
        leases = {e.key: e.value.renewed_at for e in await self.store.node_leases.items()}
        # people see the last beat: the lease's, newer than the record's (written on change only)
        nodes = [msgspec.structs.replace(n, heartbeat=max(n.heartbeat, leases.get(n.name, n.heartbeat)))
                 for n in (e.value for e in await self.store.nodes.items())]
        vmis = [e.value for e in await self.store.vmis.items()]
        ratio = (await self.cluster.current()).cpu_allocation_ratio
        return NodeList(items=[
            NodeView(node=u.node, ready=u.ready, allocated_memory=u.used_memory, allocated_cpus=u.used_vcpus,
                     vmis=u.vmis, vcpu_capacity=u.vcpu_capacity)
            for u in placement.usage(nodes, vmis, self.readiness(nodes), cpu_ratio=ratio)])

    async def _cluster_eviction_strategy(self) -> EvictionStrategy | None:
        return (await self.cluster.current()).eviction_strategy

    async def _node_ready(self, name: str) -> bool:
        """Whether the node is Ready, as ``get nodes`` says (its lease's last beat counted)."""
        entry = await self.store.nodes.get(name)
        if entry is None:
            return False
        lease = await self.store.node_leases.get(name)
        beat = max(entry.value.heartbeat, lease.value.renewed_at if lease is not None else 0.0)
        node = msgspec.structs.replace(entry.value, heartbeat=beat)
        return bool(self.readiness([node]).get(name, False))

    # --- images ------------------------------------------------------------------------------------
    async def image_list(self, body: bytes) -> ImageList:
        decode_request(body, ListRequest)
        try:
            infos = await self.store.images.list()
        except nats.js.errors.NotFoundError:
            infos = []
        return ImageList(items=sorted((_image_info(i) for i in infos if not i.deleted), key=lambda i: i.name))

    async def image_delete(self, body: bytes) -> Ack:
        name = decode_request(body, NameRequest).name
        validate_image_reference(name, "name")
        try:
            await self.store.images.get_info(name)
        except nats.js.errors.NotFoundError:
            raise ApiError(Code.NOT_FOUND, f"image {name!r} not found") from None
        await self.store.images.delete(name)
        return Ack(message=f"image {name} deleted")


def _image_info(info: ObjectInfo) -> ImageInfo:
    fmt, virtual = imagefacts.recorded(info.headers)  # the uploader's word, shown as such
    return ImageInfo(name=info.name, size=info.size or 0, digest=info.digest, modified=info.mtime,
                     format=fmt.value if fmt else None, virtual_size=virtual,
                     sha256=imagefacts.sha256_hex(info.digest))


def _key(entry: Entry[VM] | Entry[VMI] | Entry[NetworkAttachment]) -> str:
    return entry.key


def _power(body: bytes) -> PowerRequest:
    req = decode_request(body, PowerRequest)
    _valid_name(req.name)
    check_grace_period(req.grace_period)
    return req


def _name(body: bytes) -> str:
    return _valid_name(decode_request(body, NameRequest).name)


def _valid_name(name: str) -> str:
    if not subjects.is_dns1123_label(name):
        raise ApiError(Code.INVALID, f"{name!r} is not a valid name (a DNS-1123 label)", "name")
    return name
