"""``virtbus.api.{vm,vmi}.{addvolume,removevolume}``: KubeVirt's volume hotplug, the thin shell around
proto.hotplug. A VM's volume goes into the VM's spec (kept for its next start, as virtctl now always
keeps it) and into its running instance's, each by compare-and-set; the instance's launcher attaches
or detaches the disk when it hears it (launcher.hotplug) and says how it went in the instance's
``status.volumeStatus``. A standalone instance has only its own spec.

A volume is a file of one node: one already on another node than the instance's is refused, one on no
node yet is put on the instance's (its first consumer), and one another VM uses is refused.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec

from proto.api import Ack, decode_request
from proto.errors import ApiError, Code
from proto.hotplug import ADDED, REMOVED, AddVolumeRequest, RemoveVolumeRequest, added, check_add, removed
from proto.state import FINAL_PHASES, VMI, Phase
from proto.validation import check_name
from scheduler import volumes
from scheduler.volumes import VolumeApi
from servicekit.store import Entry, Store


def active(vmi: VMI) -> bool:
    """An instance that runs or is on its way: its spec still matters to its launcher."""
    return vmi.phase not in FINAL_PHASES and not vmi.stop_requested and not vmi.deleting


def check_instance(vmi: VMI) -> None:
    """An instance whose disks may change now."""
    if vmi.phase is Phase.UNKNOWN:  # nobody would carry it out, and the VM's spec is not written either
        raise ApiError(Code.UNAVAILABLE, f"VMI {vmi.name}'s node is not reporting; try again once it is")
    state = vmi.migration_state
    if state is not None and not state.final:
        raise ApiError(Code.CONFLICT, f"VMI {vmi.name} is migrating; its volumes change once it has moved")


class HotplugApi:
    def __init__(self, store: Store, volume_api: VolumeApi) -> None:
        self.store = store
        self.volume_api = volume_api

    def table(self) -> dict[tuple[str, str], Callable[[bytes], Awaitable[object]]]:
        return {("vm", "addvolume"): self.vm_add, ("vm", "removevolume"): self.vm_remove,
                ("vmi", "addvolume"): self.vmi_add, ("vmi", "removevolume"): self.vmi_remove}

    async def _instance(self, name: str) -> Entry[VMI] | None:
        """The running (or starting) instance of that name, checked it may take a change now."""
        entry = await self.store.vmis.get(name)
        if entry is None or not active(entry.value):
            return None
        check_instance(entry.value)
        return entry

    async def _check_volume(self, req: AddVolumeRequest, user: str, node: str | None) -> None:
        """The volume exists, no other VM uses it, and it is where the instance runs (or on no node)."""
        record = (await self.store.volumes.require(req.volume_name, "volume")).value
        others = [u for u in await self.volume_api.users(req.volume_name) if u != user]
        if others:
            raise ApiError(Code.CONFLICT, f"volume {req.volume_name} is in use by {', '.join(others)}", "volumeName")
        if node is not None and record.node is not None and record.node != node:
            raise ApiError(Code.INVALID, f"volume {req.volume_name} is on node {record.node} and {user} runs on "
                                         f"{node}: a volume is a file of one node", "volumeName")

    async def _add_to_instance(self, instance: Entry[VMI], req: AddVolumeRequest, kind: str) -> None:
        added(instance.value.spec, req, kind)  # refused before anything is written

        def attach(vmi: VMI) -> VMI | None:
            if vmi.uid != instance.value.uid or not active(vmi):
                return None  # another run now: it starts from the VM's spec
            check_instance(vmi)
            if any(v.name == (req.disk_name or req.volume_name) for v in vmi.spec.volumes):
                return None  # already there (a retry)
            return msgspec.structs.replace(vmi, spec=added(vmi.spec, req, kind))

        entry = await self.store.vmis.mutate(instance.key, attach)
        # on the node the instance is on as written (bound meanwhile, maybe); one not bound yet is placed
        # with its volumes by the binder
        if entry is None or entry.value.uid != instance.value.uid or entry.value.node_name is None:
            return
        if not await volumes.pin(self.store, entry.value.spec, entry.value.node_name):
            raise ApiError(Code.CONFLICT, f"volume {req.volume_name} is on another node than VMI {instance.key}; "
                                          "its launcher waits for it there")

    async def vm_add(self, body: bytes) -> Ack:
        req = decode_request(body, AddVolumeRequest)
        check_add(req)
        vm = await self.store.vms.require(req.name, "VM")
        added(vm.value.spec, req)
        instance = await self._instance(req.name)
        if instance is not None:
            added(instance.value.spec, req, "VMI")
        await self._check_volume(req, req.name, instance.value.node_name if instance else None)
        message = ADDED.format(kind="VM", name=req.name, volume=req.volume_name)
        if req.dry_run:
            return Ack(message=f"{message} (dry run: nothing changed)")

        await self.store.vms.mutate(req.name, lambda v: msgspec.structs.replace(
            v, spec=added(v.spec, req), generation=v.generation + 1))
        if instance is not None:
            await self._add_to_instance(instance, req, "VMI")
        return Ack(message=message)

    async def vmi_add(self, body: bytes) -> Ack:
        req = decode_request(body, AddVolumeRequest)
        check_add(req)
        entry = await self.store.vmis.require(req.name, "VMI")
        instance = await self._instance(req.name)
        if instance is None:
            raise ApiError(Code.INVALID, f"VMI {req.name} is not running ({entry.value.phase.value}); a volume is "
                                         "hotplugged into a running instance")
        added(instance.value.spec, req, "VMI")
        await self._check_volume(req, req.name, instance.value.node_name)
        message = ADDED.format(kind="VMI", name=req.name, volume=req.volume_name)
        if req.dry_run:
            return Ack(message=f"{message} (dry run: nothing changed)")
        await self._add_to_instance(instance, req, "VMI")
        return Ack(message=message)

    async def vm_remove(self, body: bytes) -> Ack:
        req = decode_request(body, RemoveVolumeRequest)
        check_name(req.name, "name")
        vm = await self.store.vms.require(req.name, "VM")
        removed(vm.value.spec, req.volume_name)
        instance = await self._instance(req.name)
        if instance is not None and any(v.name == req.volume_name for v in instance.value.spec.volumes):
            removed(instance.value.spec, req.volume_name, "VMI")
        message = REMOVED.format(kind="VM", name=req.name, volume=req.volume_name)
        if req.dry_run:
            return Ack(message=f"{message} (dry run: nothing changed)")
        await self.store.vms.mutate(req.name, lambda v: msgspec.structs.replace(
            v, spec=removed(v.spec, req.volume_name), generation=v.generation + 1))
        if instance is not None:
            await self._remove_from_instance(instance, req.volume_name)
        return Ack(message=message)

    async def vmi_remove(self, body: bytes) -> Ack:
        req = decode_request(body, RemoveVolumeRequest)
        check_name(req.name, "name")
        await self.store.vmis.require(req.name, "VMI")
        instance = await self._instance(req.name)
        if instance is None:
            raise ApiError(Code.INVALID, f"VMI {req.name} is not running; a volume is removed from a running "
                                         "instance")
        removed(instance.value.spec, req.volume_name, "VMI")
        message = REMOVED.format(kind="VMI", name=req.name, volume=req.volume_name)
        if req.dry_run:
            return Ack(message=f"{message} (dry run: nothing changed)")
        await self._remove_from_instance(instance, req.volume_name)
        return Ack(message=message)

    async def _remove_from_instance(self, instance: Entry[VMI], name: str) -> None:
        def detach(vmi: VMI) -> VMI | None:
            if vmi.uid != instance.value.uid or not active(vmi):
                return None
            if not any(v.name == name for v in vmi.spec.volumes):
                return None  # already gone (a retry)
            check_instance(vmi)
            return msgspec.structs.replace(vmi, spec=removed(vmi.spec, name, "VMI"))

        await self.store.vmis.mutate(instance.key, detach)
