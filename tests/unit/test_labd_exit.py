"""labd says how a lab service ended before it restarts it: a handler SIGKILLed used to be logged as
``exited (0)``, because labd reaps every child itself and Popen then no longer learns the status."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from ctl.labd import describe_exit


def test_describe_exit_names_the_signal_or_the_status() -> None:
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(-15) == "killed by SIGTERM"
    assert describe_exit(1) == "exited (status 1)"
    assert describe_exit(0) == "exited (status 0)"
    assert describe_exit(-200) == "killed by signal 200"


def test_reap_keeps_the_status_popen_loses() -> None:
    # In a process of its own: _reap waits for any child, and pytest's own must not be taken.
    script = textwrap.dedent("""
        import os, signal, subprocess, time
        from ctl.labd import _reap
        proc = subprocess.Popen(["sleep", "30"])
        os.kill(proc.pid, signal.SIGKILL)
        ended = {}
        deadline = time.monotonic() + 10
        while proc.pid not in ended and time.monotonic() < deadline:
            ended.update(_reap())
            time.sleep(0.01)
        print(ended.get(proc.pid), proc.poll())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    reaped, popen_says = out.stdout.split()
    assert reaped == "-9"
    assert popen_says == "0"  # what labd printed before
