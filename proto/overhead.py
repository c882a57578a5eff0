"""What a VM takes from its node beyond its guest RAM, so that the scheduler books a node no fuller
than it really gets: its launcher, its private libvirtd and its QEMU's own memory (translation
cache, device models, heap), as KubeVirt adds its computed overhead to each virt-launcher pod's
memory request. The figure is measured by bench/density.py (PSS per VM beyond guest RAM, with
tens of VMs on one node) and rounded up; guest RAM itself is booked in full, since a guest may
touch all of it."""

from __future__ import annotations

from proto.quantity import parse_bytes
from proto.spec import VMSpec

# measured (bench/density.py --max 12, 12 seed VMs on one node, PSS means): launcher 17.0 + libvirtd
# 10.2-10.4 + QEMU beyond guest RAM 28.6-28.7 = 55.8-56.0 MiB (was 91 MiB before the fork server's
# sharing, the trimmed libvirtd and QEMU's 8 MiB translation cache); rounded up to 64 for what a
# long-running launcher and a busier guest's QEMU grow by. Lower it as they shrink.
VM_OVERHEAD_BYTES = parse_bytes("64Mi")


def footprint(spec: VMSpec) -> int:
    """Bytes of node memory the VM is booked for: its guest RAM and the overhead."""
    return parse_bytes(spec.memory) + VM_OVERHEAD_BYTES
