"""bench/launcher_watches.py, small, so it cannot rot: 100 launchers on 4 nodes, each way. A
consumer of vmis each (as launchers watched before launcher.ownvmi) against none beyond the
leader's own when they follow their copies; every launcher hears its VMI and then the pause asked
of it, and a launcher following its copy gets nothing while nothing changes. (Its timings and CPU
figures are read by people from full runs, never asserted here.)"""

from __future__ import annotations

import re

import pytest

from tests.benchrun import run_bench

pytestmark = pytest.mark.integration


def test_a_small_run_of_the_launchers_watches_each_way() -> None:
    out = run_bench("launcher_watches.py", "--vmis", "100", "--nodes", "4", "--idle", "2", timeout=180)
    for way in ("consumer", "copy"):
        assert re.search(rf"^{way}: 100 launchers' watches started and each had its VMI in", out, re.M), out
        assert re.search(rf"^{way}: a pause asked of every VMI: .* every launcher heard its own", out, re.M), out
    consumers = re.search(r"^consumer: idle .* (\d+) consumers of vmis", out, re.M)
    copies = re.search(r"^copy: idle .* got (\d+) messages .* (\d+) consumers of vmis", out, re.M)
    assert consumers is not None and int(consumers[1]) == 101, out  # each launcher's, and the leader's
    assert copies is not None and (int(copies[1]), int(copies[2])) == (0, 1), out  # the leader's alone
