"""What the launcher makes of libvirt's events and of a launch that failed (launcher.lifecycle),
and how the handler names a launcher's end (handler.vmiplan.launcher_exit_reason)."""

from __future__ import annotations

import errno

import pytest

from handler.vmiplan import launcher_exit_reason
from launcher import lifecycle
from launcher.lifecycle import ConditionChanged, Ended, LibvirtdLost, judge
from proto.state import Phase


@pytest.mark.parametrize(("event", "detail", "phase", "words"), [
    ("STOPPED", "SHUTDOWN", Phase.SUCCEEDED, "guest shut down"),  # the guest powered off
    ("STOPPED", "FAILED", Phase.FAILED, "QEMU exited unexpectedly"),  # QEMU killed
    ("STOPPED", "DESTROYED", Phase.FAILED, "destroyed outside the launcher"),
    ("STOPPED", "CRASHED", Phase.FAILED, "guest crashed"),
    ("CRASHED", "PANICKED", Phase.FAILED, "kernel panic"),
    ("STOPPED", "7", Phase.FAILED, "domain stopped: 7"),  # a detail we have no name for
])
def test_ends(event: str, detail: str, phase: Phase, words: str) -> None:
    verdict = judge(event, detail)
    assert isinstance(verdict, Ended) and verdict.phase is phase and words in verdict.reason


@pytest.mark.parametrize(("detail", "reason"), [
    ("IOERROR", "PausedIOError"), ("PAUSED", "PausedByUser"), ("WATCHDOG", "PausedWatchdog"), ("9", "Paused"),
])
def test_a_pause_is_the_paused_condition(detail: str, reason: str) -> None:
    verdict = judge("SUSPENDED", detail)
    assert isinstance(verdict, ConditionChanged)
    assert (verdict.condition.type, verdict.condition.status, verdict.condition.reason) == ("Paused", "True", reason)


def test_resumed_clears_it_and_a_migration_pause_is_no_pause() -> None:
    verdict = judge("RESUMED", "0")
    assert isinstance(verdict, ConditionChanged) and verdict.condition.status == "False"
    assert judge("SUSPENDED", "MIGRATED") is None
    assert judge("STARTED", "0") is None and judge("DEFINED", "0") is None


def test_a_closed_connection_is_a_lost_libvirtd() -> None:
    verdict = judge(lifecycle.CONNECTION_CLOSED, "EOF")
    assert isinstance(verdict, LibvirtdLost) and "(eof)" in verdict.reason
    lost, back = lifecycle.libvirtd_lost(verdict.reason), lifecycle.libvirtd_back(1)
    assert (lost.type, lost.status, back.type, back.status) == ("LibvirtdLost", "True", "LibvirtdLost", "False")


@pytest.mark.parametrize(("attempt", "active", "gives_up"), [
    (1, True, None),  # reattached
    (1, None, None),  # it did not start: try again
    (3, None, None),
    (4, None, "did not come back after 3 restarts"),
    (1, False, "the domain did not survive"),  # QEMU died with it: nothing to reattach
])
def test_when_a_libvirtd_restart_gives_up(attempt: int, active: bool | None, gives_up: str | None) -> None:
    why = lifecycle.restart_gives_up(attempt, 3, active)
    assert (why is None) if gives_up is None else (why is not None and gives_up in why)


def test_a_full_disk_is_said_plainly() -> None:
    full = OSError(errno.ENOSPC, "No space left on device", "/var/lib/virtbus/nodes/n1/vmis/a/launcher.pid.tmp")
    assert lifecycle.launch_failure(full) == ("launch failed: no space left in the node's state directory "
                                              "(/var/lib/virtbus/nodes/n1/vmis/a/launcher.pid.tmp)")
    other = lifecycle.launch_failure(RuntimeError("qemu-img failed: x"))
    assert other == "launch failed: RuntimeError: qemu-img failed: x"


@pytest.mark.parametrize(("code", "reason"), [
    (-9, "launcher killed by SIGKILL"), (1, "launcher exited (code 1)"), (None, "launcher exited"),
    (-200, "launcher killed by signal 200"),
])
def test_a_launchers_end(code: int | None, reason: str) -> None:
    assert launcher_exit_reason(code) == reason
