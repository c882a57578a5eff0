"""A launch's files kept in memory (handler.residentfiles) with the real kernel: the pages a process
used are locked (mlock, seen in /proc/self/status's VmLck), those it did not are not, the bound holds,
and release gives them back."""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from handler.residentfiles import PAGE, MlockedFiles, ResidentFiles

pytestmark = pytest.mark.integration


def locked_kib() -> int:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmLck:"))
    return int(line.split()[1])


@pytest.fixture
def touched(tmp_path: Path) -> tuple[Path, mmap.mmap]:
    """A 64-page file mapped here of which only page 40 was read."""
    path = tmp_path / "lib.so"
    with path.open("wb") as f:
        for _ in range(64):  # a page per write: one write of all 64 may make them one large folio in the
            f.write(os.urandom(PAGE))  # page cache (ext4, Linux 6.18), which a read fault maps whole
    with path.open("rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    assert mapped[40 * PAGE] is not None
    return path, mapped


def test_the_pages_a_process_used_are_locked_and_released(touched: tuple[Path, mmap.mmap]) -> None:
    path, mapped = touched
    files = ResidentFiles(MlockedFiles())
    try:
        added = files.learn([os.getpid()])
        assert added == files.locked > 0
        assert locked_kib() * 1024 == files.locked  # what it says it locked is what the kernel counts
        pages = files.kept[str(path)]
        assert 40 in pages
        assert not pages & set(range(16))  # never read, nor near a page read: left out
        assert files.learn([os.getpid()]) == 0  # a process is looked at once
    finally:
        files.release()
        mapped.close()
    assert locked_kib() == 0


def test_the_node_s_state_is_skipped_and_the_bound_holds(touched: tuple[Path, mmap.mmap], tmp_path: Path) -> None:
    path, mapped = touched
    files = ResidentFiles(MlockedFiles(), skip=(tmp_path,), bound=8 * PAGE)
    try:
        files.learn([os.getpid()])
        assert str(path) not in files.kept
        assert 0 < files.locked <= 8 * PAGE
        assert locked_kib() * 1024 == files.locked
    finally:
        files.release()
        mapped.close()


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """Another process of this test's, ended after it."""
    proc = subprocess.Popen(["sleep", "30"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def resident() -> Iterator[ResidentFiles]:
    files = ResidentFiles(MlockedFiles())
    try:
        yield files
    finally:
        files.release()


def test_another_process_is_read_and_one_that_ended_is_passed_over(
        sleeper: subprocess.Popen[bytes], resident: ResidentFiles) -> None:
    resident.learn([sleeper.pid, 2**22 + 1])  # the second is no process
    assert os.path.realpath(f"/proc/{sleeper.pid}/exe") in resident.kept


class RefusingLocks:
    def __init__(self) -> None:
        self.asked = 0

    def lock(self, path: str, pages: list[tuple[int, int]]) -> int:
        self.asked += 1
        raise PermissionError(1, "Operation not permitted")

    def release_all(self) -> None:
        pass


def test_refused_locking_stops_trying(sleeper: subprocess.Popen[bytes]) -> None:
    locks = RefusingLocks()
    files = ResidentFiles(locks)
    assert files.learn([os.getpid()]) == 0
    assert files.refused and locks.asked == 1
    assert files.learn([sleeper.pid]) == 0
    assert locks.asked == 1


def test_past_the_limit_processes_are_taken_as_looked_at_unread(
        sleeper: subprocess.Popen[bytes], resident: ResidentFiles) -> None:
    """A burst's hundred launchers run the same programs: a few are read, the rest only taken as seen."""
    resident.learn([sleeper.pid, 2**22 + 1, os.getpid()], limit=2)  # the first two, one of them no process
    assert os.path.realpath(f"/proc/{sleeper.pid}/exe") in resident.kept
    assert not any("python" in path for path in resident.kept)  # this process, past the limit: not read
    assert resident.learn([os.getpid()]) == 0  # ... and taken as looked at


def mapping_process(path: Path) -> subprocess.Popen[str]:
    """A process that maps the file and reads its first page, then waits."""
    code = ("import mmap, sys, time; f = open(sys.argv[1], 'rb'); m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ); "
            "m[0]; print('mapped', flush=True); time.sleep(30)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "mapped"
    return proc


def test_a_file_replaced_under_its_name_is_locked_again(tmp_path: Path, resident: ResidentFiles) -> None:
    """An upgrade puts a new file where the old one was: a launch after it uses the new one's pages."""
    path = tmp_path / "lib.so"
    path.write_bytes(os.urandom(8 * PAGE))
    procs = [mapping_process(path)]
    try:
        resident.learn([procs[0].pid])
        old = resident.kept[str(path)]
        assert 0 in old
        new = tmp_path / "lib.so.new"
        new.write_bytes(os.urandom(8 * PAGE))
        new.replace(path)
        procs.append(mapping_process(path))
        assert resident.learn([procs[1].pid]) >= PAGE  # the new file's first page, though page 0 was kept
        assert 0 in resident.kept[str(path)]
        assert locked_kib() * 1024 == resident.locked  # the old file's pages still locked, and counted
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
            assert proc.stdout is not None
            proc.stdout.close()


def test_what_was_locked_is_remembered_and_a_new_handler_locks_it_again(
        touched: tuple[Path, mmap.mmap], tmp_path: Path) -> None:
    path, mapped = touched
    memory = tmp_path / "cache" / "launch-files.json"
    first = ResidentFiles(MlockedFiles(), memory=memory)
    try:
        first.learn([os.getpid()])
        kept = {p: set(pages) for p, pages in first.kept.items()}
    finally:
        first.release()
        mapped.close()  # the test's own mapping gone: only a recall can lock the page now
    assert locked_kib() == 0
    assert not list(memory.parent.glob(".*.tmp"))  # written by rename, nothing left beside it
    second = ResidentFiles(MlockedFiles(), memory=memory)
    try:
        added = second.recall()
        assert added == second.locked > 0
        assert locked_kib() * 1024 == second.locked
        assert second.kept[str(path)] == kept[str(path)]  # page 40, as the first handler had it
    finally:
        second.release()


def test_a_replaced_file_or_a_broken_list_locks_nothing(touched: tuple[Path, mmap.mmap], tmp_path: Path) -> None:
    path, mapped = touched
    memory = tmp_path / "launch-files.json"
    files = ResidentFiles(MlockedFiles(), memory=memory)
    try:
        files.learn([os.getpid()])
    finally:
        files.release()
        mapped.close()
    replacement = path.with_name("lib.so.new")  # an upgrade: the same path, another file
    replacement.write_bytes(path.read_bytes())
    replacement.replace(path)
    again = ResidentFiles(MlockedFiles(), memory=memory)
    try:
        again.recall()
        assert str(path) not in again.kept
    finally:
        again.release()
    for broken in (b"{not json", b'{"page_size": 4096, "files": [], "extra": 1}', b'{"page_size": "x"}'):
        memory.write_bytes(broken)
        files = ResidentFiles(MlockedFiles(), memory=memory)
        assert files.recall() == 0 and not files.kept
    assert locked_kib() == 0


def test_a_fifo_is_never_opened_to_be_locked(tmp_path: Path) -> None:
    """A remembered list is a file on disk: a FIFO named in it must not hold the handler up."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert MlockedFiles().lock(str(fifo), [(0, 1)]) == 0
