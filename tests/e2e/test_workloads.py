"""A VirtualMachineInstanceReplicaSet on a real lab with real guests: examples/testvmirs.yaml applied
unchanged reaches 2 Running; one instance's launcher SIGKILLed for real is replaced by a new instance
that runs; scaled to 1, one is left; deleted, its instances go."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest

from tests.conftest import REPO
from tests.e2e.conftest import Lab
from tests.e2e.test_faults import wait_until

pytestmark = pytest.mark.e2e
RS = "testreplicaset"
MARKER = "VIRTBUS-GUEST-READY"


def instances(lab: Lab) -> list[dict[str, Any]]:
    listed = lab.json("get", "vmis")
    assert isinstance(listed, dict)
    return [i for i in listed["items"]
            if any(o["name"] == RS for o in i["metadata"].get("ownerReferences", []))]


def running(lab: Lab) -> list[dict[str, Any]]:
    return [i for i in instances(lab) if i["status"].get("phase") == "Running"]


def status(lab: Lab) -> dict[str, Any]:
    got = lab.json("get", "vmirs", RS)
    assert isinstance(got, dict)
    return dict(got["status"])


def test_a_replica_set_keeps_real_guests_running(lab: Lab) -> None:
    began = time.monotonic()
    lab.cli("apply", "-f", str(REPO / "examples" / "testvmirs.yaml"))
    wait_until("2 instances Running", lambda: status(lab) == {"replicas": 2, "readyReplicas": 2}, 300, lab)
    first = running(lab)
    assert len(first) == 2 and all(i["metadata"]["name"].startswith(f"{RS}-") for i in first)
    for item in first:
        lab.cli("console", item["metadata"]["name"], "--log", "--until", MARKER, "--timeout", "180")
    print(f"\nvmirs of 2 -> both guests booted: {time.monotonic() - began:.1f}s")
    table = lab.cli("get", "vmirs").stdout
    assert table.split("\n")[1].split()[:4] == [RS, "2", "2", "2"], table

    victim = first[0]
    name, node = victim["metadata"]["name"], victim["status"]["nodeName"]
    launcher = int((lab.state_dir / "nodes" / node / "vmis" / name / "launcher.pid").read_text().split()[0])
    os.kill(launcher, signal.SIGKILL)  # a process of this test's lab, found by the lab's own pidfile
    killed = time.monotonic()

    def replaced() -> bool:
        now = running(lab)
        return len(now) == 2 and name not in {i["metadata"]["name"] for i in now}
    wait_until("a replacement Running", replaced, 300, lab)
    print(f"launcher killed -> replacement Running: {time.monotonic() - killed:.1f}s")
    wait_until("the killed instance removed", lambda: name not in {i["metadata"]["name"] for i in instances(lab)},
               120, lab)

    lab.cli("scale", "vmirs", RS, "--replicas", "1")
    wait_until("one instance left", lambda: len(instances(lab)) == 1 and len(running(lab)) == 1, 180, lab)
    assert status(lab) == {"replicas": 1, "readyReplicas": 1}

    lab.cli("delete", "vmirs", RS)
    wait_until("its instances gone", lambda: not instances(lab), 180, lab)
    assert "not found" in lab.cli("get", "vmirs", RS, check=False).stderr
