"""How a launcher's private libvirtd (launcher.libvirtd) is started: the binary it is dated by, the
only driver it loads, the namespace and transparent-huge-page setting its QEMU inherits, and the one
CPU it starts on."""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import shutil
import subprocess
from pathlib import Path

from servicekit import netns_socket

# libvirtd loads every connection driver it finds (network, nodedev, nwfilter, storage, secret,
# interface) and starts each; ours needs only QEMU's. LIBVIRT_DRIVER_DIR points it at a directory
# holding just that one: 3 MiB less PSS and half the CPU of a start (measured warm: 15.5 vs 18.4 MiB).
DRIVER_GLOBS = ("/usr/lib/*/libvirt/connection-driver/libvirt_driver_qemu.so",  # Debian's multiarch
                "/usr/lib64/libvirt/connection-driver/libvirt_driver_qemu.so")
# Every module a libvirtd may load: connection drivers, storage-file and storage backends, lock drivers.
MODULE_GLOBS = ("/usr/lib/*/libvirt/*/*.so", "/usr/lib64/libvirt/*/*.so")
PR_SET_THP_DISABLE = 41
_libc = ctypes.CDLL(None, use_errno=True)


def spawn(argv: list[str], *, netns: str | None, huge_pages: bool, env: dict[str, str] | None = None,
          executable: str | None = None, cpu: int | None = None) -> subprocess.CompletedProcess[str]:
    """Runs ``argv`` (libvirtd -d, which returns once daemonized) in the pod's network namespace (None:
    this one) and, unless huge_pages, without transparent huge pages; whatever it starts (QEMU)
    inherits both.

    No preexec_fn, so subprocess vforks: a fork of the launcher (~40 MiB of Python) cost ~9 ms of
    CPU in the two processes, and then a fault for each page the launcher wrote next. Instead the
    namespace is this thread's for the moment of the spawn (the child is made from it), and the THP
    setting is this process's own: a launcher's child processes are all its one VM's.

    cpu: the one CPU it starts on (``widen`` gives it the others later). libvirt checks its cache of
    QEMU's capabilities against the host CPU's CPUID as read by the thread that looks it up, and a
    virtual machine's CPUs may not all answer the same (this box's two differ in leaf 0x1f): started
    wherever the scheduler put it, half the launches found the node's cache outdated and probed QEMU
    afresh (~1 s of CPU), rewriting it for the other half to do the same."""
    _libc.prctl(PR_SET_THP_DISABLE, 0 if huge_pages else 1, 0, 0, 0)
    wide = os.sched_getaffinity(0)  # this thread's: the child is made from it
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    try:
        return netns_socket.run_in(netns, lambda: subprocess.run(argv, capture_output=True, text=True, check=False,
                                                                 env=env, executable=executable))
    finally:
        if cpu is not None:
            os.sched_setaffinity(0, wide)


def widen(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid`` may run on ``cpus`` (what it starts next inherits it). A thread that
    ended meanwhile is passed over."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return
    for tid in tids:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(tid), cpus)


def libvirtd_path() -> str:
    """libvirtd by its full path, as its argv[0]. libvirt keeps QEMU's capabilities in a cache valid
    for the libvirt it was probed by: the newest ctime of libvirtd's own binary (stat'ed by argv[0]:
    a bare "libvirtd" is not found, so not counted) and of each module it has loaded so far. Run
    bare with only the QEMU driver, a libvirtd counted that driver's ctime at start, then a storage
    module's (a second newer, from the same install) as the domain started, and found the cache it
    had just written outdated: every launch probed QEMU afresh twice (~1.4 s of CPU, ~0.6 s of it
    before the domain could be defined). With the binary counted from the start, the count stays
    while no module is newer than the binary (see ``dated_as_newest``)."""
    return shutil.which("libvirtd") or "libvirtd"


def newest(ctimes: dict[str, int], binary: str) -> str:
    """Of these files (path -> ctime in whole seconds, as libvirt compares them), the newest; the
    binary where it is among the newest (pure)."""
    return max(ctimes, key=lambda path: (ctimes[path], path == binary), default=binary)


def dated_as_newest(workdir: Path, binary: str, module_globs: tuple[str, ...] = MODULE_GLOBS) -> str:
    """libvirtd's argv[0]: the binary itself, or, where one of libvirt's modules changed after it,
    ``workdir/libvirtd``, a link to that module. libvirt dates itself by the stat of its argv[0]
    (which follows a link) and of each module it loads, and outdates its QEMU capabilities cache
    when that date rises; a storage-file module loaded as the domain starts, newer than the binary
    (a package of its own upgraded, or perf's build-id cache hard-linking it), raised it in every
    launch: each launch's libvirtd probed QEMU again, and wrote a cache the next one found outdated
    (a 100-VMI lane's P95 3x). Dated by the newest file from the start, the date no longer rises.
    The process is still libvirtd (``executable``); only its command line names the link."""
    ctimes: dict[str, int] = {}
    for path in (binary, *sorted(p for pattern in module_globs for p in glob.glob(pattern))):
        with contextlib.suppress(OSError):
            ctimes[path] = int(os.stat(path).st_ctime)
    target = newest(ctimes, binary)
    if target == binary:
        return binary
    return str(_linked(workdir / "libvirtd", target))


def qemu_only_drivers(where: Path, patterns: tuple[str, ...] = DRIVER_GLOBS) -> Path | None:
    """A directory holding only libvirt's QEMU driver (a symlink), for LIBVIRT_DRIVER_DIR; None
    where that module is not found (another layout: libvirtd then loads all its drivers)."""
    found = sorted(path for pattern in patterns for path in glob.glob(pattern))
    if not found:
        return None
    where.mkdir(parents=True, exist_ok=True)
    _linked(where / Path(found[0]).name, found[0])
    return where


def _linked(link: Path, target: str) -> Path:
    """``link``, a symlink to ``target``: left as it is when it already is one (a libvirtd restart),
    made again when it points elsewhere."""
    if not link.is_symlink() or os.readlink(link) != target:
        link.unlink(missing_ok=True)
        link.symlink_to(target)
    return link
