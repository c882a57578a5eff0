"""hostDisk volumes: a raw file of the node's, only under a directory the node's operator allowed
(``python -m handler --host-disk-dir DIR``, may repeat; none given: every hostDisk is refused).

The API took only an absolute, normalised path (proto.validation.check_host_disk); here the node
resolves it, symlinks and all, and refuses one that lands outside every allowed directory (also
resolved), so a link planted inside an allowed directory cannot reach /etc. ``DiskOrCreate`` makes a
sparse raw file of its capacity when none is there; ``Disk`` needs it to exist. The file is the
operator's: it outlives the VM and is never removed here.
"""

from __future__ import annotations

import os
from pathlib import Path

from proto.errors import ApiError, Code
from proto.quantity import parse_bytes
from proto.spec import HostDisk

# the manifest's field: a node's refusal names it as the API's would
FIELD = "spec.template.spec.volumes[{index}].hostDisk.path"


def refuse(index: int, message: str) -> ApiError:
    field = FIELD.format(index=index)
    return ApiError(Code.INVALID, f"{field}: {message}", field)


def allowed_under(resolved: Path, dirs: tuple[Path, ...]) -> Path | None:
    """Pure: the allowed directory (resolved) ``resolved`` sits strictly below, or None."""
    return next((d for d in dirs if resolved != d and resolved.is_relative_to(d)), None)


def resolve(disk: HostDisk, index: int, dirs: tuple[Path, ...]) -> Path:
    """The file's real path, checked against the allowed directories."""
    if not dirs:
        raise refuse(index, "this node allows no hostDisk (its handler has no --host-disk-dir)")
    path = Path(disk.path)
    if not path.is_absolute():
        raise refuse(index, f"{disk.path!r} is not an absolute path")
    # strict=False: a DiskOrCreate file need not exist yet; its directory's links are resolved all the same
    real = Path(os.path.realpath(path))
    roots = tuple(Path(os.path.realpath(d)) for d in dirs)
    if allowed_under(real, roots) is None:
        shown = f"{disk.path} (that is {real})" if str(real) != disk.path else disk.path
        raise refuse(index, f"{shown} is outside the directories this node allows for hostDisks "
                            f"({', '.join(str(d) for d in roots)})")
    return real


def prepare(disk: HostDisk, index: int, dirs: tuple[Path, ...]) -> Path:
    """Blocking: the file to attach as raw, made first for DiskOrCreate."""
    real = resolve(disk, index, dirs)
    if real.exists():
        if not real.is_file():
            raise refuse(index, f"{real} is not a regular file")
        return real
    if disk.kind == "Disk":
        raise refuse(index, f"{real} does not exist (type Disk needs it; DiskOrCreate makes it)")
    if disk.capacity is None:  # proto.validation requires it
        raise refuse(index, "a DiskOrCreate hostDisk needs a capacity")
    if not real.parent.is_dir():
        raise refuse(index, f"{real.parent} is not a directory")
    try:
        # O_EXCL: a file someone made meanwhile is theirs, not truncated; O_NOFOLLOW: no link planted there
        fd = os.open(real, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return prepare(disk, index, dirs)
    try:
        os.ftruncate(fd, parse_bytes(disk.capacity))  # sparse: takes no room until written
    finally:
        os.close(fd)
    return real
