"""What a VM takes from its node beyond its guest RAM, so that the scheduler books a node no fuller
than it really gets: its launcher, its private libvirtd and its QEMU's own memory (translation
cache, device models, heap), as KubeVirt adds its computed overhead to each virt-launcher pod's
memory request. The figure is measured by bench/density.py (PSS per VM beyond guest RAM, with
tens of VMs on one node) and rounded up; guest RAM itself is booked in full, since a guest may
touch all of it."""

from __future__ import annotations

from proto.quantity import parse_bytes
from proto.spec import VMSpec

# measured (bench/density.py, 12 seed VMs on one node, PSS means): launcher 35.6 + libvirtd 15.7 +
# QEMU beyond guest RAM 39.8 = 91.0 MiB; the host's MemAvailable fell ~120 MiB per VM (30 MiB of
# guest RAM touched). Lower it as the launcher and libvirtd shrink.
VM_OVERHEAD_BYTES = parse_bytes("96Mi")


def footprint(spec: VMSpec) -> int:
    """Bytes of node memory the VM is booked for: its guest RAM and the overhead."""
    return parse_bytes(spec.memory) + VM_OVERHEAD_BYTES
