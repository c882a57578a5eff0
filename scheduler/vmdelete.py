"""A VM deleted goes with what is its own, as KubeVirt's owner references have it: its node ports, its
floating IPs' attachment and the volumes its dataVolumeTemplates made. ``virtbus delete vm`` and a pool
scaling down delete the same way. Its instance is stopped by the VM controller, which sees the VM gone."""

from __future__ import annotations

from proto.state import VM
from scheduler.exposures import ExposureApi
from scheduler.floatingips import FloatingIPApi
from scheduler.volumes import VolumeApi
from servicekit.store import Entry, Store


async def delete_vm(store: Store, entry: Entry[VM]) -> list[str]:
    """Delete the VM as read (CONFLICT if it changed since), then what it owns; the volumes deleted."""
    await store.vms.delete(entry.key, entry.revision)
    await ExposureApi(store).remove_all(entry.key)
    await FloatingIPApi(store).detach_all(entry.key)
    return await VolumeApi(store).delete_owned(entry.key)
