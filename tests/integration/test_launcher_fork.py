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


def test_a_launcher_has_a_stdin_even_when_its_fork_server_had_none(tmp_path: Path) -> None:
    """The fork server closes its own stdin (the handler's pipe) in the child before giving it
    /dev/null, which then lands on fd 0 itself; fd 0 must stay open, or the next socket a program
    the launcher runs opens is fd 0 (ovs-vsctl aborts then, and the OVS e2e test saw it)."""
    from launcher.forkserver import stdio

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: as the fork server leaves it, fd 0 closed
        code = 1
        try:
            os.close(read)
            os.close(0)
            stdio(str(tmp_path / "launcher.log"))
            null = os.stat("/dev/null")
            zero = os.fstat(0)
            os.write(1, b"to the log\n")
            # and the programs it runs get them too (an fd 0 closed at their exec is as bad)
            passed = subprocess.run(["sh", "-c", "readlink /proc/self/fd/0"], capture_output=True, text=True,
                                    check=False).stdout.strip()
            if (zero.st_rdev, zero.st_ino) == (null.st_rdev, null.st_ino) and passed == "/dev/null":
                code = 0
        finally:
            os.write(write, bytes([code]))
            os._exit(code)
    os.close(write)
    try:
        assert os.read(read, 1) == b"\x00", "fd 0 of the child is not /dev/null"
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    assert "to the log" in (tmp_path / "launcher.log").read_text()
