"""One launcher per VMI: a second one, spawned while the first still runs (a handler killed between
spawning and noting it), leaves at once and touches nothing; the handler adopts the first. Real
processes, killed for real."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from handler.launchers import Launchers, NodePaths
from servicekit import launcherlock

pytestmark = pytest.mark.integration

# Stands in for `python -m launcher ... --uid UID`: takes the lock as the launcher does, writes its
# pidfile, then lives until killed.
_HOLDER = """
import sys, time
from pathlib import Path
from servicekit import launcherlock
vmi_dir = Path(sys.argv[1])
if launcherlock.hold(vmi_dir) is None:
    sys.exit(launcherlock.EXIT_ALREADY_RUNNING)
import os
launcherlock.write_pid(vmi_dir, os.getpid(), sys.argv[2])
print("holding", flush=True)
time.sleep(300)
"""


def start_holder(vmi_dir: Path, uid: str, *, pipe: bool = True) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", _HOLDER, str(vmi_dir), uid, "launcher"],
                            stdout=subprocess.PIPE if pipe else subprocess.DEVNULL, text=True,
                            cwd=Path(__file__).resolve().parents[2])


def test_a_second_launcher_leaves_and_the_first_is_adopted(tmp_path: Path) -> None:
    paths = NodePaths(tmp_path / "nodes" / "node1", tmp_path / "logs")
    vmi_dir = paths.vmi_dir("testvm")
    first = start_holder(vmi_dir, "uid-1")
    try:
        assert first.stdout is not None and first.stdout.readline().strip() == "holding"
        assert launcherlock.held(vmi_dir)
        second = start_holder(vmi_dir, "uid-1", pipe=False)
        assert second.wait(30) == launcherlock.EXIT_ALREADY_RUNNING
        assert launcherlock.read_pid(vmi_dir) == (first.pid, "uid-1")  # the loser wrote nothing
        launchers = Launchers(paths, node="node1", nats_url="nats://127.0.0.1:1", netns_prefix="vbt", kvm=False)
        adopted = launchers.adopt("testvm")
        assert adopted is not None and adopted.pid == first.pid and adopted.alive()
        # the first is SIGKILLed: the kernel lets go of its lock; nothing is adopted any more
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        deadline = time.monotonic() + 5
        while launcherlock.held(vmi_dir):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert Launchers(paths, node="node1", nats_url="x", netns_prefix="vbt", kvm=False).adopt("testvm") is None
        fd = launcherlock.hold(vmi_dir)  # a new launcher may take it
        assert fd is not None
        os.close(fd)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        if first.stdout is not None:
            first.stdout.close()
