"""Volumes (``virtbus.api.volume.*``): disks that outlive every run, KubeVirt's PVCs and DataVolumes.

A volume is a record here and one qcow2 file on its node, made by the first launcher that uses it
(launcher/disks.py) and removed by the node once its record is gone and no instance there uses it
(handler/volumefiles.py). A VM's ``dataVolumeTemplates`` make volumes owned by the VM, which go with
it, as KubeVirt's owner references have them go.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import msgspec
import structlog

from proto.api import (
    Ack,
    ListRequest,
    NameRequest,
    VolumeCreate,
    VolumeList,
    VolumeReply,
    VolumeResize,
    decode_request,
)
from proto.errors import ApiError, Code
from proto.quantity import parse_bytes
from proto.snapshots import written_volumes
from proto.spec import Ephemeral, VMSpec, claims
from proto.state import PersistentVolume, Phase
from proto.validation import check_name, validate_volume_fields
from servicekit.store import Entry, Store

log = structlog.get_logger()
_DELETE_ATTEMPTS = 20  # a deleted VM's volume read again and deleted, while its node keeps writing its progress


class VolumeApi:
    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    async def create(self, body: bytes) -> VolumeReply:
        req = decode_request(body, VolumeCreate)
        validate_volume_fields(req.name, req.size, req.image, req.node)
        if req.node is not None and await self.store.nodes.get(req.node) is None:
            raise ApiError(Code.INVALID, f"node {req.node!r} is not registered", "node")
        volume = await self._make(req.name, req.size, req.image, req.node, owner=None)
        return VolumeReply(item=volume)

    async def _make(self, name: str, size: str, image: str | None, node: str | None, owner: str | None,
                    field: str = "name") -> PersistentVolume:
        volume = PersistentVolume(name=name, uid=str(uuid.uuid4()), size=size, created_at=self.clock(), image=image,
                                  node=node, owner_vm=owner)
        try:
            await self.store.volumes.create(name, volume)
        except ApiError as exc:
            if exc.code is Code.ALREADY_EXISTS:
                raise ApiError(Code.ALREADY_EXISTS, f"volume {name!r} already exists", field) from None
            raise
        log.info("volume created", volume=name, size=size, image=image, node=node, owner=owner)
        return volume

    async def get(self, body: bytes) -> VolumeReply:
        name = decode_request(body, NameRequest).name
        check_name(name, "name", "volume name")
        return VolumeReply(item=(await self.store.volumes.require(name, "volume")).value)

    async def list_all(self, body: bytes) -> VolumeList:
        decode_request(body, ListRequest)
        return VolumeList(items=sorted((e.value for e in await self.store.volumes.items()), key=lambda v: v.name))

    async def resize(self, body: bytes) -> VolumeReply:
        """Grow a volume (a PVC's resize): under a running guest that writes it at once (KubeVirt's
        ExpandDisks), else before the next start of a VM using it."""
        req = decode_request(body, VolumeResize)
        check_name(req.name, "name", "volume name")
        entry = await self.store.volumes.require(req.name, "volume")
        validate_volume_fields(req.name, req.size, entry.value.image, entry.value.node)
        if parse_bytes(req.size) < parse_bytes(entry.value.size):
            raise ApiError(Code.INVALID, f"volume {req.name} is {entry.value.size}; a volume only grows, as a PVC does",
                           "size")
        grown = msgspec.structs.replace(entry.value, size=req.size)
        await self.store.volumes.update(req.name, grown, entry.revision)
        log.info("volume resized", volume=req.name, size=req.size)
        # a running guest that writes it has it grown under it by its launcher (launcher.volumegrowth)
        running = sorted(e.key for e in await self.store.vmis.items()
                         if e.value.phase is Phase.RUNNING and req.name in written_volumes(e.value.spec))
        whom = (f"the guest of VM {running[0]} sees it now" if len(running) == 1 else
                f"the guests of VMs {', '.join(running)} see it now" if running else
                "a VM using it sees it at its next start")
        return VolumeReply(item=grown, message=f"volume/{req.name} resized to {req.size}; {whom}")

    async def delete(self, body: bytes) -> Ack:
        name = decode_request(body, NameRequest).name
        check_name(name, "name", "volume name")
        entry = await self.store.volumes.require(name, "volume")
        users = await self.users(name)
        if users:
            raise ApiError(Code.CONFLICT, f"volume {name} is in use by VM {', '.join(users)}; delete or change the "
                                          "VM first", "name")
        await self.store.volumes.delete(name, entry.revision)
        return Ack(message=f"volume {name} deleted; its node removes its file")

    async def users(self, name: str) -> list[str]:
        """The VMs (and standalone instances) whose spec uses the volume."""
        out = {e.key for e in await self.store.vms.items() if any(c == name for _, c in claims(e.value.spec.volumes))}
        out |= {e.key for e in await self.store.vmis.items()
                if any(c == name for _, c in claims(e.value.spec.volumes))}
        return sorted(out)

    # --- a VM's volumes ------------------------------------------------------------------------------
    async def for_vm(self, spec: VMSpec) -> None:
        """Before a VM is stored: its dataVolumeTemplates made, every volume it uses there."""
        made = {t.name for t in spec.data_volume_templates}
        for index, template in enumerate(spec.data_volume_templates):
            existing = await self.store.volumes.get(template.name)
            if existing is None:
                await self._make(template.name, template.size, template.image, None, owner=spec.name,
                                 field=f"spec.dataVolumeTemplates[{index}].metadata.name")
            elif existing.value.owner_vm != spec.name:
                raise ApiError(Code.ALREADY_EXISTS, f"volume {template.name!r} already exists and is not this VM's",
                               f"spec.dataVolumeTemplates[{index}].metadata.name")
        for index, name in claims(spec.volumes):
            if name not in made and await self.store.volumes.get(name) is None:
                claim = "ephemeral.persistentVolumeClaim" if isinstance(spec.volumes[index].source, Ephemeral) \
                    else "persistentVolumeClaim"
                raise ApiError(Code.INVALID, f"volume {name!r} does not exist; create it with: virtbus volume create "
                               f"{name} --size SIZE", f"spec.template.spec.volumes[{index}].{claim}")

    async def delete_owned(self, vm: str) -> list[str]:
        """The volumes a deleted VM's dataVolumeTemplates made go with it (KubeVirt's owner references)."""
        gone = []
        for entry in await self.store.volumes.items():
            if entry.value.owner_vm != vm:
                continue
            current: Entry[PersistentVolume] = entry
            for _ in range(_DELETE_ATTEMPTS):
                try:
                    await self.store.volumes.delete(current.key, current.revision)
                    gone.append(current.key)
                    break
                except ApiError as exc:
                    if exc.code is not Code.CONFLICT:
                        raise
                # its node wrote its progress or phase meanwhile: still the VM's, it still goes (a
                # conflict skipped here left it behind for good, its VM's record already gone)
                again = await self.store.volumes.get(entry.key)
                if again is None or again.value.owner_vm != vm:
                    break
                current = again
            else:
                raise ApiError(Code.CONFLICT, f"volume {entry.key!r} of deleted VM {vm!r} kept changing; "
                                              f"delete it with `virtbus volume delete {entry.key}`")
        return gone


# --- the binder's part ------------------------------------------------------------------------------
async def required_node(store: Store, spec: VMSpec) -> tuple[str | None, str | None]:
    """(the node the VM's volumes hold it to, or None; why it cannot be placed at all, or None)."""
    nodes: dict[str, str] = {}
    for _, name in claims(spec.volumes):
        entry = await store.volumes.get(name)
        if entry is None:
            return None, f"volume {name!r} not found"
        if entry.value.node is not None:
            nodes[name] = entry.value.node
    if len(set(nodes.values())) > 1:
        where = ", ".join(f"{v} on {n}" for v, n in sorted(nodes.items()))
        return None, f"the VM's volumes are on different nodes ({where}); a VM runs where its volumes are"
    return next(iter(nodes.values()), None), None


async def pin(store: Store, spec: VMSpec, node: str) -> bool:
    """Every volume of the VM not yet on a node is on ``node`` from now (its first consumer); False
    if one was put elsewhere meanwhile (the caller decides again)."""
    for _, name in claims(spec.volumes):
        def place(volume: PersistentVolume) -> PersistentVolume | None:
            if volume.node is not None:
                return None
            return msgspec.structs.replace(volume, node=node)

        entry = await store.volumes.mutate(name, place)  # as written, or as read if already placed
        if entry is None or entry.value.node != node:
            return False
    return True
