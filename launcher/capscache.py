"""The node's cache of QEMU's capabilities (libvirt's, shared by the node's launchers, see
launcher.namespaces), trimmed of one flag before each libvirtd starts.

With ``cpu-unavailable-features`` in it, libvirt learns what CPU a guest got by asking QEMU for
each CPU feature property in turn: ~400 QMP ``qom-get`` round trips, 0.2 s of every domain start on
this box (libvirt's qemuProcessFetchGuestCPU, whatever the CPU mode). Without it, libvirt reads the
same answer from the x86 CPU's ``feature-words`` and ``filtered-features`` (two round trips), as it
did for QEMU before 4.1: the guest and its CPU are the same, 5 ms instead of 0.2 s. The flag only
chooses that path and whether MSR features may be asked for by name (the launcher asks for none).

A cache libvirt probes afresh (QEMU or libvirt upgraded) has the flag again; the next launch trims it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

CACHE_DIR = Path("/var/cache/libvirt/qemu/capabilities")  # in the launcher's mount namespace
SLOW_FLAG = "<flag name='cpu-unavailable-features'/>"


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
            fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".trim-", suffix=".tmp")
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(new)
                os.chmod(tmp, path.stat().st_mode & 0o777)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError:
            continue
        done.append(path)
    return done
