"""The node's cache of QEMU's capabilities (libvirt's, shared by the node's launchers, see
launcher.namespaces), trimmed of one flag before each libvirtd starts.

With ``cpu-unavailable-features`` in it, libvirt learns what CPU a guest got by asking QEMU for
each CPU feature property in turn: ~400 QMP ``qom-get`` round trips, 0.2 s of every domain start on
this box (libvirt's qemuProcessFetchGuestCPU, whatever the CPU mode). Without it, libvirt reads the
same answer from the x86 CPU's ``feature-words`` and ``filtered-features`` (two round trips), as it
did for QEMU before 4.1: the guest and its CPU are the same, 5 ms instead of 0.2 s. The flag only
chooses that path and whether MSR features may be asked for by name (the launcher asks for none).

A cache libvirt probes afresh (QEMU or libvirt upgraded) has the flag again; the next launch trims it.

A node starting with an empty cache (a new lab node, a new node on a host that had one) is seeded
from the host's copy (``seed``), which each probe keeps up to date (``keep``): libvirt checks a cache
against its QEMU, itself and the host's kernel and CPU as it loads it, and probes afresh when it does
not match, so a copy from this host is used exactly when a probe would give the same (~3 s of a
node's start, and two QEMUs' CPU, saved).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from servicekit.paths import host_cache

CACHE_DIR = Path("/var/cache/libvirt/qemu/capabilities")  # in the launcher's mount namespace
NODE_CACHE_DIR = Path("libvirt-cache/qemu/capabilities")  # the same, under a node's state directory
SLOW_FLAG = "<flag name='cpu-unavailable-features'/>"


def host_cache_dir() -> Path:
    """The host's copy, beside its other caches (the test guest, the KVM probe)."""
    return host_cache() / "qemu-capabilities"


def trimmed(xml: str) -> str | None:
    """The cache file's text without the flag's line; None when it has none (nothing to write)."""
    if SLOW_FLAG not in xml:
        return None
    return "".join(line for line in xml.splitlines(keepends=True) if line.strip() != SLOW_FLAG)


def trim(cache_dir: Path = CACHE_DIR) -> list[Path]:
    """Each cache file with the flag rewritten without it (atomically: another launcher's libvirtd may
    be reading it); returns those rewritten. A file that cannot be read or written is left as it is:
    libvirt then takes the slow path, nothing worse."""
    done = []
    for path in sorted(cache_dir.glob("*.xml")) if cache_dir.is_dir() else []:
        try:
            new = trimmed(path.read_text())
            if new is None:
                continue
            _write(path, new.encode(), path.stat().st_mode & 0o777)
        except OSError:
            continue
        done.append(path)
    return done


def seed(node_dir: Path, host_dir: Path) -> dict[str, int]:
    """A node cache with no file yet gets the host's files; returns each copied file's name and mtime
    (ns), by which ``reused`` tells whether libvirt kept it. A file that cannot be copied is skipped."""
    if any(node_dir.glob("*.xml")):
        return {}
    copied = {}
    for source in sorted(host_dir.glob("*.xml")) if host_dir.is_dir() else []:
        try:
            node_dir.mkdir(parents=True, exist_ok=True)
            target = node_dir / source.name
            _write(target, source.read_bytes(), source.stat().st_mode & 0o777)
            copied[source.name] = target.stat().st_mtime_ns
        except OSError:
            continue
    return copied


def reused(cache_dir: Path, copied: dict[str, int]) -> list[str]:
    """The seeded files libvirt loaded as they were (neither probed afresh nor removed), looked at in
    ``cache_dir`` (the node's cache, wherever it is mounted)."""
    kept = []
    for name, mtime in copied.items():
        try:
            if (cache_dir / name).stat().st_mtime_ns == mtime:
                kept.append(name)
        except OSError:
            continue
    return kept


def keep(node_dir: Path, host_dir: Path) -> list[Path]:
    """The node's files that differ from the host's copy (or are not in it) copied there; returns
    those. Best effort, as ``trim``."""
    done = []
    for source in sorted(node_dir.glob("*.xml")) if node_dir.is_dir() else []:
        try:
            data = source.read_bytes()
            target = host_dir / source.name
            if target.is_file() and target.read_bytes() == data:
                continue
            host_dir.mkdir(parents=True, exist_ok=True)
            _write(target, data, source.stat().st_mode & 0o777)
        except OSError:
            continue
        done.append(target)
    return done


def _write(path: Path, data: bytes, mode: int) -> None:
    """Atomically: a reader (another launcher's libvirtd, another node's seed) sees all or nothing."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".write-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
