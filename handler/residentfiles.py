"""The files a launch runs (QEMU, libvirtd and their libraries and modules, the launcher's Python)
kept in memory, as far as a launch touched them, so the first launches after a quiet spell do not
read them from disk again.

Why: a node's launches come in bursts between quiet minutes. A kernel that reclaims cold page cache
proactively (this box's host pages out file pages unused for a minute: DAMON's pageout) drops exactly
those pages, and the next launch waits on the disk for them. One VM started after 90 s of quiet took
67-79 major faults and reached Running in 0.22-0.29 s; with what a launch uses locked, 9-20 major
faults and 0.21-0.25 s (bench/start_to_marker.py, README's Benchmarks).

How: when the last launch of a burst (or a launch alone) reaches Running, the handler reads which
file pages a few of the node's launch processes (that launch's launcher, the newest libvirtds and
QEMUs) have in their page tables (/proc/PID/maps and /proc/PID/pagemap): the pages they used, 45.9 MiB
after the seed VM's launch, not the 110 MiB of those files. It locks (mlock) the ones not locked yet,
up to ``DEFAULT_BOUND``; where locking is refused (no CAP_IPC_LOCK, RLIMIT_MEMLOCK) it stops trying.
The locks are the handler process's and go with it. What is locked is also remembered on disk
(``memory``: the host's virtbus cache, beside the KVM probe's verdict), and a starting handler locks
it again before its node takes VMs, so a restarted or new node's first launches do not wait on the
disk either. Measured with the files paged out first (`bench/lane.py --own-lab --vms 4 --interval 1`,
three runs each): the slowest of the four VMs (each node's first launch among them) Running 0.52-0.60 s
after its creation before, 0.49 s after.
A remembered file replaced since (an upgrade: another inode) is passed over; so is anything that is
not a regular file or lies under ``skip``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import msgspec
import structlog

log = structlog.get_logger()

DEFAULT_BOUND = 128 * 2**20  # bytes: one launch (launcher, libvirtd, QEMU) used 45.6 MiB of the 110 its files have
# Where a mapped file is one of these, it is not the launch's code but a device, a VM's own file, etc.
_NOT_CODE = ("/dev/", "/proc/", "/sys/", "/memfd:", "/SYSV")


def _under(skip: Iterable[Path]) -> tuple[str, ...]:
    return tuple(f"{p.as_posix().rstrip('/')}/" for p in skip)


def _code_path(path: str, skipped: tuple[str, ...]) -> bool:
    """Pure: a path a launch's code may come from: absolute, not a device, /proc, /sys, a memfd or
    shared memory, not a deleted (replaced) file, not under the ``skipped`` prefixes (``_under``)."""
    return (path.startswith("/") and not path.endswith(" (deleted)") and "\x00" not in path
            and not path.startswith(_NOT_CODE) and not path.startswith(skipped))
PAGE = os.sysconf("SC_PAGE_SIZE")
LOOK_AT = 7  # processes read at each look: the launch's launcher, and the newest few of the node's others


@dataclass(frozen=True)
class Mapping:
    start: int  # address
    end: int
    offset: int  # in the file, bytes
    path: str
    inode: int = 0


def file_mappings(maps: str, skip: Iterable[Path] = ()) -> list[Mapping]:
    """Pure: the mappings of regular files in a process's /proc/PID/maps text; not anonymous memory,
    devices, memfds, deleted (replaced) files, nor anything under ``skip`` (the node's state: VM
    disks and the like)."""
    skipped = _under(skip)
    found: list[Mapping] = []
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 6:
            continue  # anonymous
        path = fields[5]
        if not _code_path(path, skipped):
            continue
        try:
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            offset, inode = int(fields[2], 16), int(fields[4])
        except ValueError:
            continue
        found.append(Mapping(lo, hi, offset, path, inode))
    return found


_PRESENT = bytes(1 if b & 0x80 else 0 for b in range(256))  # an entry's last byte holds bit 63


def present_pages(mapping: Mapping, entries: bytes) -> list[int]:
    """Pure: the file's page indexes the process has in its page tables (pagemap's bit 63, one 8-byte
    little-endian entry per page of the mapping, in order): the pages it used. By slices and a regex,
    not a loop per page: QEMU maps ~28,000 pages of files."""
    first = mapping.offset // PAGE
    flags = entries[7::8].translate(_PRESENT)
    return [first + i for m in re.finditer(b"\x01+", flags) for i in range(m.start(), m.end())]


def runs(pages: Iterable[int]) -> list[tuple[int, int]]:
    """Pure: (first page, count) of each run of consecutive pages."""
    out: list[tuple[int, int]] = []
    for page in sorted(set(pages)):
        if out and out[-1][0] + out[-1][1] == page:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((page, 1))
    return out


class FileLocks(Protocol):
    def lock(self, path: str, pages: list[tuple[int, int]]) -> int:
        """Locks these runs of the file's pages (first page, count) in memory; returns the bytes
        locked (0 where the file cannot be mapped). Raises PermissionError where this process may
        not lock memory."""

    def release_all(self) -> None: ...


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mlock.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_MAP_FAILED = ctypes.c_void_p(-1).value
_PROT_READ, _MAP_SHARED = 1, 1


class MlockedFiles:
    """FileLocks by one read-only shared mapping of each file, whose pages are mlock'ed run by run;
    the mappings hold them until release_all (or the process's end)."""

    def __init__(self) -> None:
        self._maps: dict[str, tuple[int, int, int]] = {}  # path -> (inode, address, length)
        self._old: list[tuple[int, int]] = []  # mappings of files since replaced

    def lock(self, path: str, pages: list[tuple[int, int]]) -> int:
        try:  # not blocking: a FIFO named in a remembered list must not hold the handler up
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            return 0
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return 0
            known = self._maps.get(path)
            if known is not None and known[0] != st.st_ino:  # replaced (an upgrade): map the new one
                self._old.append(known[1:])
                known = None
            if known is None:
                if st.st_size <= 0:
                    return 0
                addr = _libc.mmap(None, st.st_size, _PROT_READ, _MAP_SHARED, fd, 0)
                if addr is None or addr == _MAP_FAILED:
                    return 0
                known = self._maps[path] = (st.st_ino, addr, st.st_size)
        finally:
            os.close(fd)
        _, addr, size = known
        locked = 0
        for first, count in pages:
            begin = first * PAGE
            length = min(count * PAGE, size - begin)
            if length <= 0:
                continue  # past the file's end (it shrank)
            if _libc.mlock(addr + begin, length) != 0:
                err = ctypes.get_errno()
                raise PermissionError(err, os.strerror(err))
            locked += (length + PAGE - 1) // PAGE * PAGE  # the kernel locks whole pages
        return locked

    def release_all(self) -> None:
        for addr, size in [*self._old, *((a, n) for _, a, n in self._maps.values())]:
            _libc.munmap(addr, size)  # unmapping unlocks
        self._maps.clear()
        self._old.clear()


def look_order(launcher: int, groups: Iterable[Iterable[int]], newest: int = 3) -> list[int]:
    """Pure: the pids to hand to ``ResidentFiles.learn``, the ones worth reading first: the launch's
    launcher, then the ``newest`` (highest pids, wrapping aside) of each group, then the rest of each
    group, which ``learn`` only takes as looked at. Why the order: ``learn`` reads the first few it has
    not seen, so after a burst of a dozen new QEMUs a list of all the guests before any libvirtd would
    have it read QEMUs only."""
    ordered = [sorted(group, reverse=True) for group in groups]
    pids = [launcher]
    for members in ordered:
        pids += members[:newest]
    for members in ordered:
        pids += members[newest:]
    return pids


class RememberedFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    path: str
    inode: int  # the file whose pages these are: a file replaced since is passed over
    pages: list[tuple[int, int]]  # runs: (first page, count)


class Remembered(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a handler had locked, on disk for the next one (``ResidentFiles.memory``)."""

    page_size: int
    files: list[RememberedFile]


def recall_plan(saved: Remembered, inode_of: Callable[[str], int | None], skip: tuple[Path, ...] = (),
                bound: int = DEFAULT_BOUND) -> list[tuple[str, int, set[int]]]:
    """Pure: (path, inode, pages) to lock again of what was remembered: files still there as they were
    (``inode_of``: the regular file's inode at that path now, None where there is none), absolute
    paths outside ``skip`` and not devices and the like, runs that make sense, within ``bound``
    bytes. Nothing at all from a list written with another page size."""
    if saved.page_size != PAGE:
        return []
    skipped = _under(skip)
    room = bound // PAGE
    plan: list[tuple[str, int, set[int]]] = []
    for f in saved.files:
        if room <= 0 or not _code_path(f.path, skipped) or inode_of(f.path) != f.inode:
            continue
        pages: set[int] = set()
        for first, count in f.pages:
            if first < 0 or count < 1:
                continue
            pages.update(range(first, first + min(count, room - len(pages))))
            if len(pages) >= room:
                break
        if pages:
            plan.append((f.path, f.inode, pages))
            room -= len(pages)
    return plan


def regular_inode(path: str) -> int | None:
    """The inode of the regular file at ``path`` (symlinks followed), None for anything else."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_ino if stat.S_ISREG(st.st_mode) else None


@dataclass
class ResidentFiles:
    """The node's launch files kept in memory, learnt from the processes of each launch."""

    locks: FileLocks
    skip: tuple[Path, ...] = ()
    bound: int = DEFAULT_BOUND
    memory: Path | None = None  # where what is locked is remembered for the next handler (None: nowhere)
    kept: dict[str, set[int]] = field(default_factory=dict)  # path -> its pages locked
    _inodes: dict[str, int] = field(default_factory=dict)  # path -> the file whose pages those are
    locked: int = 0  # bytes
    refused: bool = False
    _seen: set[int] = field(default_factory=set)  # pids already looked at

    def learn(self, pids: Iterable[int], limit: int = LOOK_AT) -> int:
        """Locks the file pages the first ``limit`` of these processes not looked at yet have used and
        are not locked yet, within the bound; returns the bytes newly locked. The others are taken as
        looked at: a node's launches run the same few programs, and each look costs ~3 ms of CPU (its
        pagemap read), which a burst of a hundred launches would pay a hundred times over. A pid used
        again by a new process is not looked at again."""
        if self.refused:
            return 0
        pids = list(pids)
        used: dict[str, set[int]] = {}
        inodes: dict[str, int] = {}
        looked = 0
        for pid in pids:
            if pid in self._seen:
                continue
            self._seen.add(pid)
            if looked >= limit:
                continue
            looked += 1
            try:
                maps = file_mappings(Path(f"/proc/{pid}/maps").read_text(), self.skip)
                with open(f"/proc/{pid}/pagemap", "rb") as pagemap:
                    for m in maps:
                        inodes[m.path] = m.inode
                        pagemap.seek(m.start // PAGE * 8)
                        used.setdefault(m.path, set()).update(
                            present_pages(m, pagemap.read((m.end - m.start) // PAGE * 8)))
            except OSError:
                continue  # gone meanwhile
        alive = set(pids)  # the pids passed are all there are: forget the ones that ended
        self._seen &= alive
        added = 0
        for path, pages in sorted(used.items()):
            if self._inodes.setdefault(path, inodes[path]) != inodes[path]:  # replaced (an upgrade): the
                self._inodes[path] = inodes[path]  # old file's pages stay locked and counted, till release
                self.kept.pop(path, None)
            added += self._lock(path, pages)
            if self.refused or self.locked >= self.bound:
                break
        if added:
            log.info("launch files kept in memory", files=len(self.kept), mib=round(self.locked / 2**20, 1),
                     added_kib=added // 1024)  # a launch often adds a few pages: 0.0 in MiB
            self._remember()
        return added

    def recall(self) -> int:
        """Locks again what a handler before this one remembered (``memory``); returns the bytes locked.
        A missing, unreadable or malformed list locks nothing (it is written afresh after the next
        burst)."""
        if self.memory is None or self.refused:
            return 0
        try:
            saved = msgspec.json.decode(self.memory.read_bytes(), type=Remembered)
        except FileNotFoundError:
            return 0
        except (OSError, msgspec.DecodeError) as exc:  # ValidationError is a DecodeError
            log.warning("remembered launch files not read; they are learnt again", path=str(self.memory),
                        error=str(exc))
            return 0
        added = 0
        for path, inode, pages in recall_plan(saved, regular_inode, self.skip, self.bound - self.locked):
            self._inodes[path] = inode
            added += self._lock(path, pages)
            if self.refused:
                break
        if added:
            log.info("launch files kept in memory, as remembered", files=len(self.kept),
                     mib=round(self.locked / 2**20, 1))
        return added

    def _remember(self) -> None:
        """What is locked, written for the next handler: in full each time, by rename (all or nothing)."""
        if self.memory is None:
            return
        saved = Remembered(PAGE, [RememberedFile(path, self._inodes.get(path, 0), runs(pages))
                                  for path, pages in sorted(self.kept.items())])
        tmp = self.memory.with_name(f".{self.memory.name}.{os.getpid()}.tmp")
        try:
            self.memory.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(msgspec.json.encode(saved))
            tmp.replace(self.memory)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            log.warning("launch files not remembered", path=str(self.memory), error=str(exc))

    def _lock(self, path: str, pages: set[int]) -> int:
        new = pages - self.kept.get(path, set())
        room = (self.bound - self.locked) // PAGE
        if not new or room <= 0:
            return 0
        chosen = sorted(new)[:room]
        try:
            got = self.locks.lock(path, runs(chosen))
        except PermissionError as exc:
            self.refused = True
            log.warning("launch files cannot be kept in memory (mlock refused); a launch after a quiet "
                        "spell may read them from disk again", error=str(exc))
            return 0
        if got:
            self.kept.setdefault(path, set()).update(chosen)
            self.locked += got
        return got

    def release(self) -> None:
        self.locks.release_all()
        self.kept.clear()
        self._inodes.clear()
        self._seen.clear()
        self.locked = 0
