"""The one way a name (a VMI, a volume, an image digest) becomes a path: under a root, or refused.

Names come off the bus. Only a DNS-1123 label (lowercase letters, digits and '-', not at either end,
at most 63) is a path part here: no '/', no '..', no control characters, no leading '-' that a
command would read as an option, nothing a shell or a YAML line would split on. The result is
checked to sit directly in the root, so even a rule loosened later cannot climb out of it.
"""

from __future__ import annotations

import os
from pathlib import Path

from proto.state import PersistentVolume
from proto.subjects import is_dns1123_label

# what code (never a message) appends to a name: ".qcow2", ".img", ".pid", ...
_SUFFIX_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-")


class UnsafeName(ValueError):
    """A name that must not become a path."""

    def __init__(self, name: str, what: str) -> None:
        super().__init__(f"{what} {name!r} is not a safe name (a DNS-1123 label)")
        self.name = name
        self.what = what


def safe_name(name: str, what: str = "name") -> str:
    if not isinstance(name, str) or not is_dns1123_label(name):
        raise UnsafeName(str(name), what)
    return name


def path_under(root: Path, name: str, suffix: str = "", *, what: str = "name") -> Path:
    """``root/<name><suffix>``, where name is a safe name; raises UnsafeName otherwise."""
    if not set(suffix) <= _SUFFIX_CHARS or ".." in suffix or suffix.startswith("-"):
        raise UnsafeName(suffix, "suffix")
    path = root / (safe_name(name, what) + suffix)
    if path.parent != root or path.name in ("", ".", ".."):
        raise UnsafeName(name, what)
    return path


def volume_path(volumes_dir: Path, volume: PersistentVolume) -> Path:
    """Pure: a volume's file. Its uid is in the name, so a volume made again never finds the bytes
    of an earlier one of the same name; the node removes files whose record is gone."""
    return path_under(volumes_dir, f"{safe_name(volume.name, 'volume name')}-{safe_name(volume.uid, 'uid')}",
                      ".qcow2")


def volume_file_id(path: Path) -> tuple[str, str] | None:
    """Pure: (name, uid) from a volume file's name, None for anything else (a partial copy)."""
    stem, dot, ext = path.name.rpartition(".")
    if not dot or ext != "qcow2" or stem.startswith("."):
        return None
    parts = stem.split("-")  # a uuid has four dashes of its own
    if len(parts) < 6:
        return None
    name, uid = "-".join(parts[:-5]), "-".join(parts[-5:])
    return (name, uid) if name else None


def host_cache() -> Path:
    """The host's virtbus cache, shared by its nodes and kept across labs: the test guest's build, the
    KVM probe's verdict, QEMU's capabilities, the launch files kept in memory (``VIRTBUS_CACHE``, by
    default ~/.cache/virtbus)."""
    return Path(os.environ.get("VIRTBUS_CACHE", Path.home() / ".cache" / "virtbus"))
