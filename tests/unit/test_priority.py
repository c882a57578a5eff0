"""launcher.priority on real processes: a child in a session of its own (as libvirtd and QEMU are)
is lowered thread by thread and as a scheduling group, and never raised; raised back (a guest about
to end) the same way, and never lowered."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from launcher import priority

THREADS = ("import threading, time; [threading.Thread(target=time.sleep, args=(60,)).start() for _ in range(2)];"
           " time.sleep(60)")


@pytest.fixture
def child() -> Iterator[int]:
    proc = subprocess.Popen([sys.executable, "-c", THREADS], start_new_session=True)
    try:
        while len(os.listdir(f"/proc/{proc.pid}/task")) < 3:
            pass
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def thread_nices(pid: int) -> set[int]:
    return {os.getpriority(os.PRIO_PROCESS, int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}


def test_every_thread_and_the_group_go_down(child: int) -> None:
    ours = priority.group_nice(os.getpid())
    assert priority.lower_process(child, 7) == 3
    assert thread_nices(child) == {7}
    if priority.group_nice(child) is not None:  # a kernel with autogroups
        assert priority.group_nice(child) == 7
        assert priority.group_nice(os.getpid()) == ours  # ours, another session, untouched


def test_lowering_never_raises(child: int) -> None:
    priority.lower_process(child, 9)
    priority.lower_process(child, 3)
    assert thread_nices(child) == {9}
    assert priority.group_nice(child) in (None, 9)


def test_a_gone_process_is_no_error() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert priority.lower_process(proc.pid, 5) == 0
    assert priority.group_nice(proc.pid) is None


def test_a_lowered_process_is_raised_back_thread_by_thread_and_as_a_group(child: int) -> None:
    priority.lower_process(child, 15)
    assert priority.raise_process(child, 5) == 3
    assert thread_nices(child) == {5}
    assert priority.group_nice(child) in (None, 5)


def test_raising_never_lowers(child: int) -> None:
    priority.lower_process(child, 3)
    priority.raise_process(child, 5)
    assert thread_nices(child) == {3}
    assert priority.group_nice(child) in (None, 3)
