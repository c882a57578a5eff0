"""A real Prometheus (Debian's) scrapes the lab and answers PromQL about a running VM."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest

from tests.conftest import EXAMPLES, REPO, free_port
from tests.e2e.conftest import Lab, guest_disk
from tests.e2e.test_networking import http_get, other, started

pytestmark = pytest.mark.e2e


@pytest.fixture
def prometheus(lab: Lab) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed: run scripts/setup.sh")
    config = subprocess.run([sys.executable, "-m", "ctl", "lab", "prometheus-config", "--state-dir", str(lab.state_dir),
                             "--interval", "1s"], capture_output=True, text=True, check=True, cwd=REPO).stdout
    (lab.state_dir / "prometheus.yml").write_text(config)
    port = free_port()
    proc = subprocess.Popen([binary, f"--config.file={lab.state_dir / 'prometheus.yml'}",
                             f"--storage.tsdb.path={lab.state_dir / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "prometheus did not get ready"
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def query(url: str, promql: str) -> float:
    with urllib.request.urlopen(f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": promql}), timeout=5) as r:
        result = json.loads(r.read())["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


def test_prometheus_sees_a_running_vm_work(lab: Lab, prometheus: str) -> None:
    lab.cli("image", "import", "quay.io/kubevirt/cirros-container-disk-demo", "--file", guest_disk())
    lab.cli("apply", "-f", str(EXAMPLES / "testvm-masquerade.yaml"))
    vmi = started(lab, "testvm")
    lab.cli("console", "testvm", "--log", "--until", "VIRTBUS-GUEST-IP", "--timeout", "120")
    deadline = time.monotonic() + 30
    while query(prometheus, 'kubevirt_vmi_phase_count{phase="running"}') != 1:
        assert time.monotonic() < deadline, "Prometheus never saw the running VM"
        time.sleep(1)
    while query(prometheus, 'kubevirt_vmi_vcpu_seconds_total{name="testvm"}') == 0:
        assert time.monotonic() < deadline, "no vCPU sample for testvm"
        time.sleep(1)
    cpu_before = query(prometheus, 'kubevirt_vmi_vcpu_seconds_total{name="testvm"}')
    sent_before = query(prometheus, 'kubevirt_vmi_network_transmit_bytes_total{name="testvm",interface="default"}')
    pod_ip = vmi["status"]["interfaces"][0]["ipAddress"]
    for _ in range(5):  # the guest works: it serves pages
        http_get(lab, other(vmi["status"]["nodeName"]), f"http://{pod_ip}/")
    deadline = time.monotonic() + 40  # each scrape (every second) asks the launchers for fresh samples
    while True:
        cpu = query(prometheus, 'kubevirt_vmi_vcpu_seconds_total{name="testvm"}')
        sent = query(prometheus, 'kubevirt_vmi_network_transmit_bytes_total{name="testvm",interface="default"}')
        if cpu > cpu_before > 0 and sent > sent_before:
            break
        assert time.monotonic() < deadline, (cpu_before, cpu, sent_before, sent)
        time.sleep(1)
    assert query(prometheus, 'rate(kubevirt_vmi_vcpu_seconds_total{name="testvm"}[20s])') > 0
    lab.cli("delete", "testvm", "--wait", "--timeout", "120")
