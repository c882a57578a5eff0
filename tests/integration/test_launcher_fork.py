"""Launchers forked by the node's fork server (launcher.forkserver) behave as spawned ones did: a
process of their own, whose exit code the handler learns (a launcher that finds its VMI's lock
taken leaves with EXIT_ALREADY_RUNNING, touching nothing), and whose command line names its VMI and
uid, which is what a restarted handler checks before it adopts one. Real processes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from handler.launchers import Launchers, NodePaths
from handler.launchfork import PAD, ForkedProcess
from servicekit import launcherlock

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_a_forked_launcher_that_finds_its_vmi_taken_leaves_and_says_so(tmp_path: Path) -> None:
    paths = NodePaths(tmp_path / "nodes" / "node1", tmp_path / "logs")
    vmi_dir = paths.vmi_dir("testvm")
    held = launcherlock.hold(vmi_dir)  # another launcher runs testvm
    assert held is not None
    launchers = Launchers(paths, node="node1", nats_url="nats://127.0.0.1:1", netns_prefix="vbt", kvm=False,
                          fork=True)
    try:
        launchers.start_fork_server()
        launcher = launchers.spawn("testvm", "uid-1")
        assert isinstance(launcher.proc, ForkedProcess)  # forked, not started afresh
        assert launcher.proc.wait(30) == launcherlock.EXIT_ALREADY_RUNNING
        assert launcher.lost_the_race() and not launcher.alive()
        assert launcherlock.read_pid(vmi_dir) is None  # the loser wrote nothing
        log = (paths.log_dir / "launcher-node1-testvm.log").read_text()
        assert "another launcher runs testvm" in log
        # the fork server still serves: a second one goes the same way
        again = launchers.spawn("testvm", "uid-1")
        assert isinstance(again.proc, ForkedProcess) and again.proc.wait(30) == launcherlock.EXIT_ALREADY_RUNNING
    finally:
        # none may outlive the lock it lost to: one that took it would go on to make a real pod
        for pid in [launcher.pid for launcher in launchers.running.values()]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        launchers.stop_fork_server()
        os.close(held)
    assert launchers.fork_server is not None and not launchers.fork_server.running()


_SHOW_AS = """
import sys, time
from launcher.forkserver import set_cmdline
set_cmdline(sys.argv[2:])
print("renamed", flush=True)
time.sleep(60)
"""


def test_a_launcher_shows_its_own_command_line() -> None:
    wanted = [sys.executable, "-m", "launcher", "--vmi", "testvm", "--uid", "uid-1"]
    proc = subprocess.Popen([sys.executable, "-c", _SHOW_AS, " " * PAD, *wanted], stdout=subprocess.PIPE, text=True,
                            cwd=REPO)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "renamed"
        shown = [w for w in Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0") if w]
        assert shown == [w.encode() for w in wanted]
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_an_exit_code_read_with_the_pid_is_kept() -> None:
    """A launcher that leaves at once: its exit code may come in the same read as its pid."""
    ours, theirs = socket.socketpair()
    try:
        proc = ForkedProcess(os.getpid(), ours)
        proc.buffer = b'{"pid":1,"exit_code":75}\n'
        assert proc.poll() == launcherlock.EXIT_ALREADY_RUNNING and proc.conn is None
    finally:
        theirs.close()
