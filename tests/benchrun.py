"""A bench/ script run by a test, in a session of its own: when it overruns its time, the whole
session is ended (the script and what it started, its nats-server and scheduler), not the script
alone, whose children would run on after the test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile

from tests.conftest import REPO


def run_bench(script: str, *args: str, timeout: float, env: dict[str, str] | None = None) -> str:
    """The script's standard output; an AssertionError with its output when it fails or overruns.
    Its temporary files go in a directory of the test's (TMPDIR), removed however it ended."""
    with tempfile.TemporaryDirectory(prefix="virtbus-benchrun-") as tmp:
        environ = {**(env if env is not None else {**os.environ, "PYTHONPATH": str(REPO)}), "TMPDIR": tmp}
        return _run(script, args, timeout, environ)


def _run(script: str, args: tuple[str, ...], timeout: float, env: dict[str, str]) -> str:
    proc = subprocess.Popen([sys.executable, str(REPO / "bench" / script), *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the session this test made: the script and its children
        out, err = proc.communicate()
        raise AssertionError(f"bench/{script} did not end within {timeout:.0f} s:\n{out}\n{err[-3000:]}") from None
    finally:
        if proc.poll() is None:  # interrupted while waiting
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, f"bench/{script} ended with {proc.returncode}:\n{out}\n{err[-3000:]}"
    return out
