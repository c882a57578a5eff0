"""The benchmarks under bench/ run, small, against a real lab, so they cannot rot: each prints its
figures. (Their numbers are read by people from full runs, never asserted here.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from ctl.lab import LabConfig
from tests.conftest import EXAMPLES, REPO
from tests.e2e.conftest import Lab

sys.path.insert(0, str(REPO / "bench"))
import warmlog  # noqa: E402 - bench/, as the lane imports it

pytestmark = pytest.mark.e2e
WARM_MEMORY = "256Mi"  # this module's lab: its handlers keep warm memory, as a node on such a host does


def bench(lab: Lab, script: str, *args: str) -> str:
    env = {**os.environ, "NATS_CREDS": lab.creds}  # the lab's admin, as `virtbus` finds it
    done = subprocess.run([sys.executable, str(REPO / "bench" / script), *args],
                          capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    assert done.returncode == 0, f"bench/{script}:\n{done.stdout}\n{done.stderr[-3000:]}\n{lab.logs()}"
    return done.stdout


def test_start_to_marker_and_idle_print_their_figures(lab: Lab) -> None:
    lab.cli("apply", "-f", str(EXAMPLES / "testvm-masquerade.yaml"))
    out = bench(lab, "start_to_marker.py", "--server", lab.url, "--runs", "1")
    assert re.search(r"median of 1: start->Running \d+\.\d+s, start->console marker \d+\.\d+s", out), out
    assert re.search(r"start->Running by stage, median of 1: start->accepted \d+\.\d+s, .* "
                     r"launcher ready->domain running \d+\.\d+s, domain running->seen Running -?\d+\.\d+s", out), out
    lab.cli("start", "testvm", "--wait", "--timeout", "300")
    out = bench(lab, "idle.py", "--seconds", "1", "--settle", "2", "--state-dir", str(lab.state_dir))
    assert re.search(r"CPU in % of one core: QEMU \d+\.\d+, launcher \d+\.\d+, libvirtd \d+\.\d+", out), out
    assert re.search(r"per-VM memory \(PSS\): QEMU \d+\.\d+ MiB, .* total \d+\.\d+ MiB", out), out
    lab.cli("delete", "testvm", "--wait", "--timeout", "120")
    gone = subprocess.run([sys.executable, str(REPO / "bench" / "idle.py"), "--seconds", "1", "--state-dir",
                           str(lab.state_dir)], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert gone.returncode == 1 and "testvm is not running on any node of the lab" in gone.stderr, gone.stderr
    assert "Traceback" not in gone.stderr, gone.stderr


def test_cli_start_prints_its_figures(lab: Lab) -> None:
    out = bench(lab, "cli_start.py", "--runs", "1", "--server", lab.url, "--command", "get vms")
    assert re.search(r"virtbus get vms: start-up median \d+ ms, P90 \d+ ms", out), out
    assert re.search(r"virtbus get nodes -o yaml: the whole call median \d+ ms, P90 \d+ ms", out), out


def test_network_prints_its_figures(lab: Lab) -> None:
    manifests = set(Path(tempfile.gettempdir()).glob("tmp*/bench-*.json"))  # a run once left its two behind
    out = bench(lab, "network.py", "--server", lab.url, "--runs", "1", "--mb", "1", "--state-dir", str(lab.state_dir))
    assert set(Path(tempfile.gettempdir()).glob("tmp*/bench-*.json")) <= manifests
    for binding in ("masquerade", "bridge"):
        assert re.search(rf"{binding} +start->DHCP lease median of 1: \d+\.\d+s .* TCP echo RTT median "
                         r"\d+\.\d+ ms, throughput \d+\.\d+ MiB/s", out), out


def test_guest_network_prints_its_figures(lab: Lab) -> None:
    out = bench(lab, "guest_network.py", "--server", lab.url, "--pings", "2", "--mb", "1", "--only", "linux-bridge")
    assert re.search(r"linux-bridge guest node1 -> guest node2 over multus-br: ping RTT avg \d+\.\d+ ms \(2 echoes\), "
                     r"HTTP throughput \d+\.\d+ MiB/s \(1 MiB\)", out), out


def test_lane_prints_its_figures_and_leaves_nothing(lab: Lab) -> None:
    out = bench(lab, "lane.py", "--server", lab.url, "--vms", "10", "--interval", "0.1", "--timeout", "300",
                "--cpu-allocation-ratio", "12", "--state-dir", str(lab.state_dir))
    assert "warm memory (handler.warmmemory): node1 256 of 256 MiB, node2 256 of 256 MiB" in out, out
    assert "KubeVirt CR applied: cpuAllocationRatio 12 (was 10)" in out, out
    assert "KubeVirt CR restored: cpuAllocationRatio 10" in out, out
    assert "   10" in lab.cli("get", "kubevirt").stdout  # the former ratio, back
    assert "lane: 10 VMIs created 0.10s apart on both nodes: 10 Running, 0 failed, 0 not Running" in out, out
    assert re.search(r"creation->Running: P50 \d+\.\d+s, P95 \d+\.\d+s, max \d+\.\d+s", out), out
    for stage in ("accepted->bound", "bound->launcher process", "launcher process->ready", "launcher ready->Running"):
        assert re.search(rf"  {re.escape(stage)} +-?\d+\.\d+s +-?\d+\.\d+s +-?\d+\.\d+s", out), out
    # each of the ten launches' CPU, read back from this run's launcher logs (a QEMU's start is never free)
    cost = re.search(r"  launch CPU to Running, P50 of 10 of 10 launches \(the launchers' logs\): "
                     r"launcher \d\.\d{3} s, its subprocesses \d\.\d{3}, libvirtd \d\.\d{3}, QEMU (\d\.\d{3}); "
                     r"all (\d\.\d{3}) s, P95", out)
    assert cost is not None and float(cost.group(1)) > 0 and float(cost.group(2)) >= float(cost.group(1)), out
    assert re.search(r"API latency \(vmi get every 0\.1s, \d+ calls, 0 timeouts\): p50 \d+\.\d+ ms, p99", out), out
    assert "deleted 10 of 10 VMIs" in out, out
    assert re.search(r"box speed: reference work \d+ ms before the run, \d+ ms after .*CPU steal during the run "
                     r"\d+\.\d %", out), out
    vmis = lab.json("get", "vmis")
    assert isinstance(vmis, dict)
    assert not [v for v in vmis.get("items", []) if v["metadata"]["name"].startswith("lane-")]
    # every launcher was forked by its node's fork server, none started afresh
    logs = "".join(p.read_text() for p in (lab.state_dir / "logs").glob("handler-*.log"))
    assert '"forked": true' in logs and '"forked": false' not in logs
    # the launches took warm memory, and each node refilled it once they were over
    deadline = time.monotonic() + 60
    while True:
        warm = [warmlog.warm_of(p.read_text()) for p in sorted((lab.state_dir / "logs").glob("handler-*.log"))]
        if all(w.refills >= 2 and w.held == 256 * 2**20 for w in warm) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert [(w.held >> 20, w.refills >= 2) for w in warm] == [(256, True), (256, True)], warm
    cfg = LabConfig.load(str(lab.state_dir))
    assert cfg is not None
    for node in ("node1", "node2"):  # and so Prometheus hears it
        with urllib.request.urlopen(f"http://127.0.0.1:{cfg.metrics[node]}/metrics", timeout=30) as page:
            text = page.read().decode()
        assert f'virtbus_node_warm_memory_bytes{{node="{node}"}} 2.68435456e+08' in text, text
        assert f'virtbus_node_warm_memory_size_bytes{{node="{node}"}} 2.68435456e+08' in text, text


def test_a_lane_the_cluster_has_no_room_for_ends_saying_so(lab: Lab) -> None:
    """At cpuAllocationRatio 1 a node of 2 CPUs takes two one-vCPU VMIs: the third stays Unschedulable,
    and the lane says so and ends, instead of waiting out --timeout."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(REPO / "bench" / "lane.py"), "--server", lab.url, "--vms", "3",
                           "--node", "node1", "--prefix", "full", "--timeout", "300", "--cpu-allocation-ratio", "1"],
                          capture_output=True, text=True, timeout=600, cwd=REPO,
                          env={**os.environ, "NATS_CREDS": lab.creds})
    took = time.monotonic() - started
    out = done.stdout
    assert done.returncode == 1, f"{out}\n{done.stderr[-3000:]}"
    counts = re.search(r"lane: 3 VMIs created 0\.10s apart on node1: (\d) Running, 0 failed, (\d) not Running", out)
    assert counts is not None and int(counts.group(2)) >= 1, out
    assert re.search(r"\d still Scheduling \(Unschedulable: .*Insufficient cpu", out), out
    assert "no room left for them: --own-lab" in out, out
    assert took < 200, f"waited {took:.0f}s, as if for --timeout (300 s)"
    assert "KubeVirt CR restored: cpuAllocationRatio 10" in out, out
    assert "deleted 3 of 3 VMIs" in out, out
    vmis = lab.json("get", "vmis")
    assert isinstance(vmis, dict)
    assert not [v for v in vmis.get("items", []) if v["metadata"]["name"].startswith("full-")]


def test_density_prints_its_figures(lab: Lab) -> None:
    out = bench(lab, "density.py", "--max", "10", "--node", "node2", "--state-dir", str(lab.state_dir),
                "--server", lab.url, "--cpu-allocation-ratio", "11")
    assert "KubeVirt CR applied: cpuAllocationRatio 11 (was 10)" in out, out
    assert "stopped: --max 10 reached" in out, out
    assert "10 VMs Running on node2, each answering HTTP" in out, out
    assert re.search(r"overhead beyond guest RAM \d+\.\d+ MiB \(the scheduler books \d+ MiB\)", out), out
    assert re.search(r"host memory left \(MemAvailable\): \d+ MiB; scheduler: node2 offers \S+ to guests, "
                     r"\S+ booked", out), out
    vms = lab.cli("get", "vms").stdout
    assert "density-" not in vms  # the bench deletes its VMs
    assert lab.json("get", "kubevirt")["spec"]["configuration"]["developerConfiguration"] == {  # type: ignore[index]
        "cpuAllocationRatio": 10}  # and puts the cluster's ratio back


def test_migration_prints_its_figures_and_leaves_nothing(lab: Lab) -> None:
    out = bench(lab, "migration.py", "--state-dir", str(lab.state_dir), "--rounds", "2", "--timeout", "300")
    assert "migration: 2 moves of a 64M TCG guest between node1 and node2: 2 Succeeded, 0 failed" in out, out
    assert re.search(r"asked->Succeeded: P50 \d+\.\d\ds, max \d+\.\d\ds", out), out
    assert re.search(r"longest without an answer \(HTTP every 0\.05s through a node port\): P50 \d+\.\d\ds", out), out
    vmis = lab.json("get", "vmis")
    assert isinstance(vmis, dict) and not vmis.get("items"), vmis
