"""The control plane's side of the node API (``virtbus.nodeapi.<node>.<verb>``): nodes register,
report the status of their VMIs and get their VMIs' secondary addresses through here, so a node
writes no shared state itself. The subject's node token is the caller (NATS lets only that node
publish there); proto.nodeapi's rules decide what it may change.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterable
from ipaddress import IPv4Network

import structlog

from proto import ipam, migrations, netcheck, subjects
from proto.api import decode_request
from proto.errors import ApiError, Code
from proto.events import Event
from proto.migrations import MigrationReport, MigrationReportReply
from proto.nodeapi import (
    VERB_ATTACH,
    VERB_REGISTER,
    VERB_STATUS,
    AttachReply,
    AttachRequest,
    Registration,
    SecondaryNic,
    StatusReply,
    StatusReport,
    apply_report,
    check_bound,
)
from proto.spec import NetworkAttachment
from proto.state import VMI, MigrationPhase, Node
from proto.validation import check_name, validate_node_registration
from scheduler.snapshots import SnapshotNodeApi
from servicekit import informer
from servicekit.claims import claim_address, release_address
from servicekit.endpoints import Endpoint
from servicekit.store import Bucket, Entry, Store

log = structlog.get_logger()
_CLAIM_ATTEMPTS = 20  # registrations racing for the same free node network


class NodeApi:
    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time,
                 nodes: Callable[[], Iterable[Node] | None] | None = None,
                 cached_vmi: Callable[[str], Entry[VMI] | None] | None = None) -> None:
        """nodes: the process's watched node records (None until its watch has read them all), for
        the address check without reading the whole bucket at every registration. cached_vmi: the
        leader's copy of a VMI (None when this process does not lead or has none), so a status
        report is one write, not a read and a write."""
        self.store = store
        self.clock = clock
        self.nodes = nodes
        self.cached_vmi = cached_vmi
        self.cidrs: Bucket[str] = Bucket(store.raw[subjects.BUCKET_IPAM], str)
        self.tables: Bucket[dict[str, str]] = Bucket(store.raw[subjects.BUCKET_IPAM], dict[str, str])
        self.networks: Bucket[NetworkAttachment] = Bucket(store.raw[subjects.BUCKET_NETWORKS], NetworkAttachment)
        # claims this process made or lost a create to, until its watch has heard them (index -> node, revision)
        self._taken: dict[int, tuple[str, int]] = {}

    def endpoints(self) -> list[Endpoint]:
        table = {VERB_REGISTER: self.register, VERB_STATUS: self.status, VERB_ATTACH: self.attach,
                 migrations.VERB_MIGRATION: self.migration}
        return [*(Endpoint(f"node-{verb}", f"{subjects.NODEAPI_PREFIX}.*.{verb}", subject_handler=handler)
                  for verb, handler in table.items()), *SnapshotNodeApi(self.store, clock=self.clock).endpoints()]

    async def register(self, subject: str, body: bytes) -> Node:
        node = subjects.nodeapi_node(subject)
        reg = validate_node_registration(decode_request(body, Registration))
        if reg.address is not None:
            known = self.nodes() if self.nodes is not None else None
            for other in known if known is not None else await self._read_nodes():
                if other.name != node and other.address == reg.address:
                    raise ApiError(Code.CONFLICT, f"address {reg.address} is node {other.name}'s", "address")
        cidr = await self._claim_cidr(node)
        for _ in range(_CLAIM_ATTEMPTS):
            now = self.clock()
            current = await self.store.nodes.get(node)
            admin = current.value.admin_labels if current else {}
            record = Node(name=node, cpus=reg.cpus, memory=reg.memory, kvm=reg.kvm, labels={**reg.labels, **admin},
                          address=reg.address, pod_cidr=str(cidr), heartbeat=now,
                          allowed_bridges=reg.allowed_bridges, ovs_bridges=reg.ovs_bridges, free_disk=reg.free_disk,
                          vlan_access_ports=reg.vlan_access_ports,
                          started_at=current.value.started_at if current else now,
                          # an admin's cordon outlives the handler's restarts, as a Node's spec does kubelet's
                          unschedulable=current.value.unschedulable if current else False, admin_labels=admin,
                          taints=current.value.taints if current else [])
            try:
                if current is None:
                    await self.store.nodes.create(node, record)
                else:
                    await self.store.nodes.update(node, record, current.revision)
            except ApiError as exc:
                # the node's own retry, sent when this one was slow to answer, wrote it meanwhile:
                # the same registration, so read it again rather than refuse the node
                if exc.code in (Code.ALREADY_EXISTS, Code.CONFLICT):
                    continue
                raise
            log.info("node registered", node=node, pod_cidr=str(cidr), address=reg.address)
            return record
        raise ApiError(Code.UNAVAILABLE, f"node {node}'s record kept changing meanwhile; try again")

    async def _read_nodes(self) -> list[Node]:
        return [e.value for e in await self.store.nodes.items()]

    async def _held(self) -> dict[int, str]:
        """Every node network's claim (index -> node), as this process knows them: its watch of the
        claims (one read of them all when it starts, then each new one and each given back), and the
        claims it found taken since that the watch has not heard yet. Once it has, the watch says
        whether they stand (a deleted node's is given back: release_node_network). One it has not heard
        of yet is found by the create that loses to it."""
        watch = informer.shared(self.store, self.cidrs, subjects.IPAM_NODE_CIDRS)
        claims = await watch.items()
        for taken, (_, revision) in list(self._taken.items()):
            if watch.seen >= revision:
                del self._taken[taken]
        watched = {int(index): e.value for e in claims if (index := e.key.removeprefix("nodecidr.")).isdigit()}
        return {index: owner for index, (owner, _) in self._taken.items()} | watched

    async def _claim_cidr(self, node: str) -> IPv4Network:
        """The node's pod CIDR: the one it holds, else the lowest free one, claimed by create.

        The claims come from the process's watch of them, not a read of every claim per registration:
        a thousand nodes registering read half a million claims that way (39 % of the scheduler's CPU
        while they did, and a consumer made on the server for each). The create decides a race; a lost
        one notes the claim and chooses again."""
        for attempt in range(_CLAIM_ATTEMPTS):
            held = await self._held()
            mine = sorted(index for index, owner in held.items() if owner == node)
            if len(mine) > 1:  # two registrations of it raced once: the one its record has stays its own
                record = await self.store.nodes.get(node)
                recorded = ipam.node_cidr_index(record.value.pod_cidr if record else None)
                mine = [recorded] if recorded in mine else mine
            if mine:
                # read once: the node may have been deleted, and its claim given back, a moment ago
                # (release_node_network), before this process heard of it
                entry = await self.cidrs.get(subjects.ipam_node_cidr(mine[0]))
                if entry is not None and entry.value == node:
                    return ipam.node_cidr(mine[0])
                self._taken.pop(mine[0], None)
                if entry is None:
                    held.pop(mine[0], None)
            free_ones = [index for index in range(ipam.NODE_NETWORKS) if index not in held]
            if not free_ones:
                break
            # the lowest free one, as a lone registration always gets; after losing a race, any free
            # one, so that registrations racing together stop colliding on the same lowest one
            free = free_ones[0] if attempt == 0 else random.choice(free_ones[:64])
            key = subjects.ipam_node_cidr(free)
            try:
                revision = await self.cidrs.create(key, node)
            except ApiError as exc:
                if exc.code is not Code.ALREADY_EXISTS:
                    raise
                # taken meanwhile, by another node or by this node's own registration answered
                # elsewhere (its retry reached another replica): whose it is decides
                owner = await self.cidrs.get(key)
                if owner is not None:
                    self._taken[free] = (owner.value, owner.revision)
                continue
            self._taken[free] = (node, revision)
            return ipam.node_cidr(free)
        else:
            raise ApiError(Code.UNAVAILABLE, "node networks kept being claimed meanwhile; try again")
        raise ApiError(Code.UNAVAILABLE, f"the cluster CIDR {ipam.CLUSTER_CIDR} is exhausted")

    async def status(self, subject: str, body: bytes) -> StatusReply:
        node = subjects.nodeapi_node(subject)
        report = decode_request(body, StatusReport)
        check_name(report.vmi, "vmi")
        now = self.clock()
        entry = await self._apply(report, node, now)
        if entry is None:
            raise ApiError(Code.NOT_FOUND, f"VMI {report.vmi} not found")
        check_bound(entry.value, node, report.uid)
        applied = entry.value.phase is report.phase if report.phase is not None else True
        if report.event is not None and applied:
            await self.store.emit(Event(kind="VirtualMachineInstance", name=report.vmi, reason=report.event.reason,
                                        message=report.event.message[:1000], timestamp=now, node=node,
                                        type="Warning" if report.event.warning else "Normal"))
        return StatusReply(applied=applied, phase=entry.value.phase)

    async def _apply(self, report: StatusReport, node: str, now: float) -> Entry[VMI] | None:
        """The report written on the leader's copy of the VMI when it has one (the write's CAS checks
        that the copy is current); else, or when the copy is not current (a conflict), or when on the
        copy it would be refused or change nothing, judged again on what the store holds."""
        cached = self.cached_vmi(report.vmi) if self.cached_vmi is not None else None
        if cached is not None:
            try:
                new = apply_report(cached.value, report, node, now)
            except ApiError:
                new = None  # the store's copy may be newer: it decides
            if new is not None and new != cached.value:
                try:
                    return Entry(report.vmi, new, await self.store.vmis.update(report.vmi, new, cached.revision))
                except ApiError as exc:
                    if exc.code is not Code.CONFLICT:
                        raise
        return await self.store.vmis.mutate(report.vmi, lambda v: apply_report(v, report, node, now))

    async def migration(self, subject: str, body: bytes) -> MigrationReportReply:
        """A node's word on a VMI's migration (proto.migrations.apply_report says who may say what); the
        VMI's events say how it went."""
        node = subjects.nodeapi_node(subject)
        report = decode_request(body, MigrationReport)
        check_name(report.vmi, "vmi")
        address = None
        if report.phase is MigrationPhase.TARGET_READY:  # where the source connects: the node's registered address
            record = await self.store.nodes.require(node, "node")
            address = record.value.address
        now = self.clock()
        before: list[VMI] = []

        def change(vmi: VMI) -> VMI | None:
            before[:] = [vmi]
            return migrations.apply_report(vmi, report, node, address, now)

        entry = await self.store.vmis.mutate(report.vmi, change)
        if entry is None or entry.value.migration_state is None:
            raise ApiError(Code.NOT_FOUND, f"VMI {report.vmi} not found")
        state = entry.value.migration_state
        if before and before[0] != entry.value:
            event = migrations.event_of(entry.value, report.phase)
            if event is not None:
                reason, message, warning = event
                await self.store.emit(Event(kind="VirtualMachineInstance", name=report.vmi, reason=reason,
                                            message=message[:1000], timestamp=now, node=node,
                                            type="Warning" if warning else "Normal"))
            log.info("migration", vmi=report.vmi, phase=state.phase.value, node=node, reason=state.reason)
        return MigrationReportReply(phase=state.phase)

    async def attach(self, subject: str, body: bytes) -> AttachReply:
        """Addresses for the VMI's secondary NICs, unique in the cluster and kept by the VM."""
        node = subjects.nodeapi_node(subject)
        req = decode_request(body, AttachRequest)
        check_name(req.vmi, "vmi")
        vmi = await self.store.vmis.require(req.vmi, "VMI")
        if migrations.target_of(vmi.value) != node or vmi.value.uid != req.uid:  # a migration's target asks too
            check_bound(vmi.value, node, req.uid)
        record = await self.store.nodes.require(node, "node")
        out = []
        for net in vmi.value.spec.networks:
            if net.kind != "multus" or not net.network_name:
                continue
            att = await self.networks.get(net.network_name)
            if att is None:
                raise ApiError(Code.NOT_FOUND, f"network {net.network_name!r} does not exist")
            # before any address is claimed: a network on a bridge this node does not allow cannot run here
            if att.value.type == "ovs":
                netcheck.check_ovs_bridge(att.key, att.value.bridge, record.value.ovs_bridges)
            else:
                netcheck.check_bridge(att.key, att.value.bridge, record.value.allowed_bridges)
                if att.value.vlan is not None and not record.value.vlan_access_ports:
                    raise ApiError(Code.INVALID, f"network {att.key} is on VLAN {att.value.vlan}, and this node's "
                                   "kernel cannot make VLAN access ports (no eBPF for tc)", "spec.vlan")
            if att.value.subnet is None:  # layer 2: the guest asks the segment's DHCP server
                out.append(SecondaryNic(interface=net.name, network=att.key, bridge=att.value.bridge, address="",
                                        type=att.value.type, vlan=att.value.vlan))
                continue
            ip = await claim_address(self.tables, subjects.ipam_network(att.key), vmi.value.spec.name,
                                     ipam.secondary_pool(att.value),
                                     f"network {att.key} has no free address left ({att.value.subnet})")
            prefix = IPv4Network(att.value.subnet).prefixlen
            out.append(SecondaryNic(interface=net.name, network=att.key, bridge=att.value.bridge,
                                    address=f"{ip}/{prefix}", type=att.value.type, vlan=att.value.vlan))
        return AttachReply(items=out)

    async def release_secondary(self, vm: str) -> None:
        """A deleted VM's secondary addresses go back to their networks (as the process's cache of
        them has them: the bucket read afresh was a consumer made on the server per deleted VM)."""
        for entry in await informer.shared(self.store, self.networks).items():
            await release_address(self.tables, subjects.ipam_network(entry.key), vm)


async def release_node_network(store: Store, node: str, pod_cidr: str | None) -> None:
    """A deleted node's pod CIDR and its pod-IP table, given back, as Kubernetes' node IPAM releases a
    deleted Node's podCIDR: a cluster whose nodes come and go does not run out of node networks.
    Only the node's own claim goes (compare-and-delete); the node, if it ever registers again, claims
    one afresh."""
    cidrs: Bucket[str] = Bucket(store.raw[subjects.BUCKET_IPAM], str)
    index = ipam.node_cidr_index(pod_cidr)
    if index is not None:
        key = subjects.ipam_node_cidr(index)
        entry = await cidrs.get(key)
        if entry is not None and entry.value == node:
            with contextlib.suppress(ApiError):  # changed meanwhile: not this node's to give back
                await cidrs.delete(key, entry.revision)
    with contextlib.suppress(ApiError):
        await cidrs.delete(subjects.ipam_pod_ips(node))
    log.info("node network given back", node=node, pod_cidr=pod_cidr)
