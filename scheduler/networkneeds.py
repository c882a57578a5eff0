"""What a VM's secondary networks ask of a node, for placement: the Open vSwitch bridges of its ovs
networks (a node without one of them cannot run it; scheduler.placement leaves it out)."""

from __future__ import annotations

from proto import subjects
from proto.spec import NetworkAttachment, VMSpec
from servicekit.store import Bucket, Store


async def ovs_bridges_needed(store: Store, spec: VMSpec) -> frozenset[str]:
    """The OVS bridges of the VM's ovs networks; a network not there (yet) asks nothing here: the
    node's attach reports that the VM cannot run."""
    names = [n.network_name for n in spec.networks if n.kind == "multus" and n.network_name]
    if not names:
        return frozenset()
    networks = Bucket(store.raw[subjects.BUCKET_NETWORKS], NetworkAttachment)
    needed = set()
    for name in names:
        entry = await networks.get(name)
        if entry is not None and entry.value.type == "ovs":
            needed.add(entry.value.bridge)
    return frozenset(needed)
