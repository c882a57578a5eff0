"""A test run ended with SIGTERM tears its fixtures down, as an interrupted one does (tests/conftest.py):
a lab in use is taken down, not left running without its state directory."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]

INNER = '''
import time
from pathlib import Path

import pytest

@pytest.fixture(scope="module")
def resource():
    Path("{started}").write_text("up")
    yield
    Path("{torn_down}").write_text("down")

def test_waits(resource):
    time.sleep(60)
'''


def test_sigterm_runs_the_finalizers(tmp_path: Path) -> None:
    started, torn_down = tmp_path / "started", tmp_path / "torn_down"
    inner = tmp_path / "test_inner.py"
    inner.write_text(INNER.format(started=started, torn_down=torn_down))
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest",
                             "--rootdir", str(tmp_path), str(inner)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the inner run did not start"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert torn_down.read_text() == "down", out.decode(errors="replace")
    assert proc.returncode != 0  # interrupted, not passed
