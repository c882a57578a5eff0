"""With no NATS to talk to, a CLI command fails with one clear line instead of retrying forever."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO, free_port

pytestmark = pytest.mark.integration


def test_a_command_gives_up_with_one_clear_error() -> None:
    url = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    done = subprocess.run([sys.executable, "-m", "ctl", "--server", url, "get", "vms"], capture_output=True,
                          text=True, timeout=60, cwd=REPO)  # it used to retry (and print tracebacks) forever
    assert done.returncode == 1
    assert done.stderr.strip() == f"error: Unavailable: cannot reach NATS at {url}: nats: no servers available " \
                                  "for connection", done.stderr
