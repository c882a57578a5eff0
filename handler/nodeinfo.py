"""What this node offers: CPUs, memory for guests, and whether KVM runs guests."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from proto.quantity import parse_bytes

# Left for the host, the handler and one launcher's libvirtd and QEMU overhead per few guests.
RESERVED_MEMORY = parse_bytes("1Gi")


@dataclass(frozen=True)
class MemInfo:
    total: int
    available: int


def meminfo(text: str) -> MemInfo:
    """/proc/meminfo's MemTotal and MemAvailable in bytes (pure)."""
    fields = {k: int(v.split()[0]) * 1024 for k, _, v in (line.partition(":") for line in text.splitlines())
              if k in ("MemTotal", "MemAvailable")}
    for name in ("MemTotal", "MemAvailable"):
        if name not in fields:
            raise RuntimeError(f"no {name} in /proc/meminfo")
    return MemInfo(fields["MemTotal"], fields["MemAvailable"])


def host_memory() -> int:
    return meminfo(Path("/proc/meminfo").read_text()).total


def guest_memory(override: str | None) -> int:
    if override:
        return parse_bytes(override)
    return max(host_memory() - RESERVED_MEMORY, 0)


def cpus(override: int | None) -> int:
    return override or os.cpu_count() or 1


def free_disk(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the filesystem that holds ``path`` (or its
    nearest existing parent: the state directory appears with the first VMI)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize
