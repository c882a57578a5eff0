"""Probes with real guests. Readiness: a VM whose httpGet probe passes once its guest's web server
answers is Ready and in its Service's endpoints; one probing a port nothing listens on runs, not Ready,
in none; and when the first guest's web server is stopped from its console, it leaves Ready and the
endpoints. Liveness: a guest whose web server is stopped has its instance ended, Failed, and its VM runs
a new one."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO
from tests.e2e.conftest import Lab
from tests.e2e.test_guest_faults import processes_named_qemu_of
from tests.e2e.test_services import endpoint_ips

pytestmark = pytest.mark.e2e
MARKER = "VIRTBUS-GUEST-READY"


def probed_manifest(lab: Lab, name: str, probe: dict[str, Any]) -> str:
    manifest = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": name},
                "spec": {"running": True, "template": {"metadata": {"labels": {"app": "probed"}}, "spec": {
                    "domain": {"resources": {"requests": {"memory": "64M"}},
                               "devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}}],
                                           "interfaces": [{"name": "default", "masquerade": {}}]}},
                    "networks": [{"name": "default", "pod": {}}],
                    "readinessProbe": probe,
                    "volumes": [{"name": "root", "containerDisk": {
                        "image": "quay.io/kubevirt/cirros-container-disk-demo"}}]}}}}
    path = lab.state_dir / f"{name}.json"
    path.write_text(json.dumps(manifest))
    return str(path)


def ready(lab: Lab, name: str) -> dict[str, Any]:
    vmi = lab.json("get", "vmis", name)
    assert isinstance(vmi, dict)
    return next(c for c in vmi["status"]["conditions"] if c["type"] == "Ready")


def wait_ready(lab: Lab, name: str, status: str, within: float) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while (cond := ready(lab, name))["status"] != status:
        assert time.monotonic() < deadline, f"{name}: Ready {cond}, not {status}, after {within}s"
        time.sleep(0.5)
    return cond


def test_ready_and_in_the_service_only_while_the_probe_passes(lab: Lab) -> None:
    lab.cli("apply", "-f", probed_manifest(lab, "healthy", {"httpGet": {"port": 80, "path": "/"},
                                                             "periodSeconds": 1, "failureThreshold": 2}))
    lab.cli("apply", "-f", probed_manifest(lab, "deaf", {"tcpSocket": {"port": 81}, "periodSeconds": 1}))
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "probed"},
               "spec": {"selector": {"app": "probed"}, "ports": [{"port": 80, "targetPort": 80}]}}
    (lab.state_dir / "probed-svc.json").write_text(json.dumps(service))
    lab.cli("apply", "-f", str(lab.state_dir / "probed-svc.json"))
    for name in ("healthy", "deaf"):
        lab.cli("start", name, "--wait", "--timeout", "300")

    start = time.monotonic()
    wait_ready(lab, "healthy", "True", within=120)
    print(f"\nhealthy Ready {time.monotonic() - start:.1f}s after Running")
    healthy_ip = lab.json("get", "vmis", "healthy")["status"]["interfaces"][0]["ipAddress"]  # type: ignore[index]
    deadline = time.monotonic() + 15
    while endpoint_ips(lab, "probed") != [healthy_ip]:
        assert time.monotonic() < deadline, endpoint_ips(lab, "probed")
        time.sleep(0.5)

    # deaf's guest booted (its console says so) and is probed all along: Running, never Ready
    lab.cli("console", "deaf", "--log", "--until", MARKER, "--timeout", "180")
    time.sleep(3)
    cond = ready(lab, "deaf")
    assert (cond["status"], cond["reason"]) == ("False", "ReadinessProbe"), cond
    assert lab.json("get", "vmis", "deaf")["status"]["phase"] == "Running"  # type: ignore[index]
    row = next(line for line in lab.cli("get", "vmis").stdout.splitlines() if line.startswith("deaf "))
    assert row.split()[-1] == "False", row  # the READY column
    assert endpoint_ips(lab, "probed") == [healthy_ip]

    # healthy's web server stopped in the guest: two failed probes later, out of Ready and the Service
    lab.cli("console", "healthy", "--log", "--until", MARKER, "--timeout", "180")
    lab.cli("console", "healthy", "--send", "killall httpd\\n")
    cond = wait_ready(lab, "healthy", "False", within=30)
    assert cond["reason"] == "ReadinessProbeFailed" and "readiness probe" in cond["message"], cond
    deadline = time.monotonic() + 15
    while endpoint_ips(lab, "probed"):
        assert time.monotonic() < deadline, endpoint_ips(lab, "probed")
        time.sleep(0.5)
    for name in ("healthy", "deaf"):
        lab.cli("delete", name, "--wait")
    lab.cli("delete", "svc/probed")


def test_a_failing_liveness_probe_ends_the_instance_and_its_vm_runs_another(lab: Lab) -> None:
    path = probed_manifest(lab, "sick", {"tcpSocket": {"port": 80}, "periodSeconds": 1})
    manifest = json.loads(Path(path).read_text())
    manifest["spec"]["template"]["spec"]["livenessProbe"] = {"tcpSocket": {"port": 80}, "initialDelaySeconds": 5,
                                                             "periodSeconds": 1, "failureThreshold": 2}
    Path(path).write_text(json.dumps(manifest))
    lab.cli("apply", "-f", path)
    lab.cli("start", "sick", "--wait", "--timeout", "300")
    first = lab.json("get", "vmis", "sick")
    assert isinstance(first, dict)
    lab.cli("console", "sick", "--log", "--until", MARKER, "--timeout", "180")
    wait_ready(lab, "sick", "True", within=60)
    time.sleep(3)  # alive: its liveness probe passes, a probe a second
    assert lab.json("get", "vmis", "sick")["metadata"]["uid"] == first["metadata"]["uid"]  # type: ignore[index]

    lab.cli("console", "sick", "--send", "killall httpd\\n")
    deadline = time.monotonic() + 90
    while True:  # ended, Failed, and a new instance of the VM (runStrategy Always) running in its place
        got = lab.cli("get", "vmis", "sick", "-o", "json", check=False)  # none, between the two
        now = json.loads(got.stdout) if got.returncode == 0 else None
        if isinstance(now, dict) and now["metadata"]["uid"] != first["metadata"]["uid"] \
                and now["status"].get("phase") == "Running":
            break
        assert time.monotonic() < deadline, now
        time.sleep(0.5)
    said = [line for line in lab.cli("get", "events").stdout.splitlines() if "/sick " in line]
    assert any("Unhealthy" in line and "liveness probe failed 2 times" in line for line in said), said
    assert any("Failed" in line and "liveness probe failed" in line for line in said), said
    # the new instance's guest boots (and, booted, heeds the power button: a delete while it still
    # booted would wait out its 30 s grace)
    lab.cli("console", "sick", "--log", "--until", MARKER, "--timeout", "180")
    lab.cli("delete", "sick", "--wait")


def test_a_standalone_vmi_failing_its_liveness_probe_ends_with_no_guest_left(lab: Lab) -> None:
    """No VM to run another: the instance ends Failed, and its launcher destroys the guest on hearing it."""
    doc = yaml.safe_load((REPO / "examples" / "testvmi.yaml").read_text())
    doc["metadata"]["name"] = "frail"
    doc["spec"]["livenessProbe"] = {"tcpSocket": {"port": 81}, "initialDelaySeconds": 2, "periodSeconds": 1,
                                    "failureThreshold": 2}
    (lab.state_dir / "frail.yaml").write_text(yaml.safe_dump(doc))
    lab.cli("apply", "-f", str(lab.state_dir / "frail.yaml"))
    deadline = time.monotonic() + 120
    while (vmi := lab.json("get", "vmis", "frail"))["status"].get("phase") != "Failed":  # type: ignore[index]
        assert time.monotonic() < deadline, vmi
        time.sleep(0.5)
    assert "liveness probe failed 2 times: Connection refused" in vmi["status"]["reason"], vmi  # type: ignore[index]
    deadline = time.monotonic() + 30
    while processes_named_qemu_of("frail"):
        assert time.monotonic() < deadline, "the failed instance's QEMU still runs"
        time.sleep(0.5)
    lab.cli("delete", "vmi", "frail", "--wait")
