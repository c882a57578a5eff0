"""bench/sweep.py, small, so it cannot rot: 200 keys, 20 deleted, swept on the nats-server the venv
brings (taken out whole) and on Debian's 2.9 (trimmed to their markers), as the leader sweeps each.
Every deleted key must be taken, the bucket must shrink, and a second pass must find nothing new.
(Its timings are read by people from full runs, never asserted here.)"""

from __future__ import annotations

import os
import re

import pytest

from servicekit import natsserver
from tests.benchrun import run_bench
from tests.conftest import REPO
from tests.integration.conftest import DEBIAN_NATS_SERVER

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("server", "verb", "left"), [
    (None, "took out", 3 * 180),  # the 180 kept keys' revisions
    (DEBIAN_NATS_SERVER, "trimmed", 3 * 180 + 20),  # and the 20 markers
])
def test_a_small_sweep_takes_every_deleted_key_once(server: str | None, verb: str, left: int) -> None:
    env = {k: v for k, v in os.environ.items() if k != natsserver.ENV} | {"PYTHONPATH": str(REPO)}
    if server is not None:
        env[natsserver.ENV] = server
    out = run_bench("sweep.py", "--keys", "200", "--deleted", "20", timeout=120, env=env)
    bucket = re.search(r"bucket: ([\d.]+) MiB, (\d+) messages", out)
    assert bucket is not None and int(bucket[2]) == 3 * 200 + 20, out  # three revisions each, 20 markers
    swept = re.search(rf"the sweep: {verb} 20 keys in [\d.]+ s; .*bucket after: [\d.]+ MiB, (\d+) messages", out)
    assert swept is not None and int(swept[1]) == left, out
    assert re.search(rf"the next sweep, nothing new deleted: {verb} 0 keys", out), out
