"""How many seed VMs one node runs: starts copies of the seed testvm (64M, masquerade, the test guest)
pinned to one node, one after another, each Running and answering HTTP on its pod IP, until the
scheduler refuses the next one (its reason printed) or --max are up; then prints how many run, what
each costs the node beyond its guest RAM (PSS of its launcher, its libvirtd, and its QEMU without
the guest's RAM), the memory the host has left, and what the scheduler booked for them.
Needs a lab with the test guest imported (scripts/lab.sh makes one). Usage:
    .venv/bin/python bench/density.py [--max N] [--node node1] [--state-dir /var/lib/virtbus/lab] [--keep]
                                      [--server nats://127.0.0.1:4222] [--cpu-allocation-ratio N]
                                      [--min-available-mib 3072] [--stop-after SECONDS]
--cpu-allocation-ratio applies the KubeVirt CR with that cpuAllocationRatio first (a 2-CPU node holds 20
one-vCPU VMs at KubeVirt's default 10; 75 lets 150 in), and the former one after. The run stops before
the next VM when the host's MemAvailable is below --min-available-mib (other work shares the host).
The VMs (density-1, density-2, ...) are deleted at the end unless --keep.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import entry  # noqa: E402 - bench/entry.py, beside this script
import virtbus_cli  # noqa: E402 - bench/virtbus_cli.py
from procstat import comm, kib_of, netns_pids, pss_kib, read_pid  # noqa: E402 - bench/procstat.py

from proto.clusterconfig import ClusterConfig, kubevirt_object  # noqa: E402
from proto.overhead import VM_OVERHEAD_BYTES  # noqa: E402

IMAGE = "quay.io/kubevirt/cirros-container-disk-demo"
MIB = 1024 * 1024


SERVER: list[str] = []  # --server URL, for every virtbus call


def ctl(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return virtbus_cli.run(SERVER, *args, check=check, timeout=timeout)


def apply_ratio(workdir: Path, ratio: int) -> dict[str, Any]:
    """The KubeVirt CR with cpuAllocationRatio ``ratio`` applied, as a user would; the one before."""
    before: dict[str, Any] = json.loads(ctl("get", "kubevirt", "-o", "json").stdout)
    path = workdir / "kubevirt.json"
    path.write_text(json.dumps(kubevirt_object(ClusterConfig(cpu_allocation_ratio=ratio))))
    ctl("apply", "-f", str(path))
    return before


def restore_ratio(workdir: Path, before: dict[str, Any]) -> None:
    path = workdir / "kubevirt.json"
    path.write_text(json.dumps(before))
    ctl("apply", "-f", str(path), check=False)


def manifest(name: str, node: str) -> dict[str, Any]:
    """The seed testvm's shape (examples/testvm-masquerade.yaml), pinned to ``node``."""
    return {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": name},
            "spec": {"running": True, "template": {"spec": {
                "nodeSelector": {"kubernetes.io/hostname": node},
                "domain": {"resources": {"requests": {"memory": "64M"}},
                           "devices": {"disks": [{"name": "containerdisk", "disk": {"bus": "virtio"}}],
                                       "interfaces": [{"name": "default", "masquerade": {}}]}},
                "networks": [{"name": "default", "pod": {}}],
                "volumes": [{"name": "containerdisk", "containerDisk": {"image": IMAGE}}]}}}}


def vmi_status(name: str) -> dict[str, Any]:
    done = ctl("get", "vmis", name, "-o", "json", check=False)
    if done.returncode != 0:
        return {}
    status = json.loads(done.stdout).get("status", {})
    return status if isinstance(status, dict) else {}


def unschedulable(status: dict[str, Any]) -> str | None:
    for cond in status.get("conditions", []):
        if cond.get("type") == "PodScheduled" and cond.get("reason") == "Unschedulable":
            return str(cond.get("message", ""))
    return None


def wait_running(name: str, timeout: float) -> tuple[str, dict[str, Any]]:
    """("Running", status), or ("Unschedulable", status) with the scheduler's reason."""
    deadline = time.monotonic() + timeout
    while True:
        status = vmi_status(name)
        if status.get("phase") == "Running" and status.get("interfaces"):
            return "Running", status
        if unschedulable(status) is not None:
            return "Unschedulable", status
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} not Running after {timeout:.0f}s: {status}")
        time.sleep(0.5)


def answers_http(state_dir: str, node: str, name: str, ip: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = ctl("lab", "exec", "--state-dir", state_dir, node, "--", "curl", "-s", "-m", "3", f"http://{ip}/",
                   check=False, timeout=60)
        if f"hostname: {name}" in done.stdout:
            return True
        time.sleep(0.5)
    return False


def guest_ram_pss_kib(qemu: int) -> int:
    """PSS of the QEMU mapping that is the guest's RAM (sized as the pc.ram memory backend)."""
    argv = Path(f"/proc/{qemu}/cmdline").read_bytes().decode(errors="replace")
    m = re.search(r'"id":"pc\.ram","size":(\d+)', argv) or re.search(r'"size":(\d+)', argv)
    if not m:
        return 0
    ram_kib = int(m.group(1)) // 1024
    size = pss = 0
    for line in Path(f"/proc/{qemu}/smaps").read_text().splitlines():
        head = re.match(r"^([0-9a-f]+)-([0-9a-f]+) ", line)
        if head:
            size = (int(head.group(2), 16) - int(head.group(1), 16)) // 1024
        elif line.startswith("Pss:") and ram_kib <= size <= ram_kib + 2048:
            pss += int(line.split()[1])
    return pss


def vm_costs(root: Path, prefix: str, node: str, name: str) -> dict[str, int]:
    """KiB: each process's PSS, and the guest's RAM as QEMU holds it."""
    pod = netns_pids(f"{prefix}-{node}-{name}")
    qemu = next(pid for pid in pod if comm(pid).startswith("qemu-system"))
    return {"launcher": pss_kib(read_pid(root / "nodes" / node / "vmis" / name / "launcher.pid")),
            "libvirtd": pss_kib(next(pid for pid in pod if comm(pid) == "libvirtd")),
            "QEMU": pss_kib(qemu), "guest RAM": guest_ram_pss_kib(qemu)}


def mem_available_kib() -> int:
    return kib_of(Path("/proc/meminfo").read_text(), "MemAvailable:") or 0


def node_memory(node: str) -> tuple[str, str]:
    """What the node offers guests and what the scheduler booked on it (guest RAM and overhead)."""
    for item in json.loads(ctl("get", "nodes", "-o", "json").stdout).get("items", []):
        if item["metadata"]["name"] == node:
            return (item["status"]["allocatable"]["memory"],
                    item["metadata"]["annotations"]["virtbus.io/allocated-memory"])
    return "?", "?"


def delete_all(names: list[str], patience: float = 600) -> None:
    """Every VM deleted at once (their launchers stop side by side), then waited for, VMIs too."""
    for name in names:
        ctl("delete", name, check=False)
    deadline = time.monotonic() + patience
    left: set[str] = set(names)
    while time.monotonic() < deadline:
        left = {item["metadata"]["name"] for kind in ("vms", "vmis")
                for item in json.loads(ctl("get", kind, "-o", "json").stdout).get("items", [])} & set(names)
        if not left:
            return
        time.sleep(2)
    print(f"still there after {patience:.0f}s: {', '.join(sorted(left))}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--max", type=int, default=1000, help="stop after this many VMs Running")
    p.add_argument("--node", default="node1")
    p.add_argument("--state-dir", default="/var/lib/virtbus/lab")
    p.add_argument("--timeout", type=float, default=300, help="seconds for each VM to be Running and answer")
    p.add_argument("--keep", action="store_true", help="leave the VMs running")
    p.add_argument("--server", default=None, help="NATS URL (else NATS_URL, else the lab's)")
    p.add_argument("--cpu-allocation-ratio", type=int, default=None, metavar="N",
                   help="apply the KubeVirt CR with cpuAllocationRatio N for the run (the former one after)")
    p.add_argument("--stop-after", type=float, default=None, metavar="SECONDS",
                   help="start no further VM after this long (the figures are printed for those running)")
    p.add_argument("--min-available-mib", type=int, default=3072,
                   help="start no further VM once the host's MemAvailable is below this (MiB)")
    args = p.parse_args()
    if args.cpu_allocation_ratio is not None and args.cpu_allocation_ratio < 1:
        p.error("--cpu-allocation-ratio must be at least 1")
    if args.server:
        SERVER[:] = ["--server", args.server]
    root = Path(args.state_dir)
    lab = json.loads((root / "lab.json").read_text())
    workdir = root / "density"
    workdir.mkdir(exist_ok=True)
    names: list[str] = []
    running: list[str] = []
    stopped_by = f"--max {args.max} reached"
    t0 = time.monotonic()
    before = None
    if args.cpu_allocation_ratio is not None:
        before = apply_ratio(workdir, args.cpu_allocation_ratio)
        was = before.get("spec", {}).get("configuration", {}).get("developerConfiguration", {})
        print(f"KubeVirt CR applied: cpuAllocationRatio {args.cpu_allocation_ratio} "
              f"(was {was.get('cpuAllocationRatio')})", flush=True)
    try:
        while len(running) < args.max:
            name = f"density-{len(names) + 1}"
            if args.stop_after is not None and time.monotonic() - t0 > args.stop_after:
                stopped_by = f"--stop-after {args.stop_after:.0f}s reached; {name} not started"
                break
            left_mib = mem_available_kib() // 1024
            if left_mib < args.min_available_mib:  # the host is shared: stop before it runs short
                stopped_by = (f"host MemAvailable {left_mib} MiB is below the {args.min_available_mib} MiB floor "
                              f"(--min-available-mib); {name} not started")
                break
            path = workdir / f"{name}.json"
            path.write_text(json.dumps(manifest(name, args.node)))
            names.append(name)
            ctl("apply", "-f", str(path))
            try:  # a VM that does not come up ends the run with its figures, not a traceback
                outcome, status = wait_running(name, args.timeout)
            except TimeoutError as exc:
                stopped_by = str(exc)[:300]
                break
            if outcome == "Unschedulable":
                stopped_by = f"{name} Unschedulable: {unschedulable(status)}"
                break
            ip = status["interfaces"][0]["ipAddress"]
            if not answers_http(args.state_dir, args.node, name, ip, args.timeout):
                stopped_by = f"{name} Running on {ip} but gives no page after {args.timeout:.0f}s"
                break
            running.append(name)
            print(f"{name} Running on {status.get('nodeName')} at {ip}, answers HTTP "
                  f"({time.monotonic() - t0:.0f}s, host MemAvailable {mem_available_kib() // 1024} MiB)", flush=True)
        costs = [vm_costs(root, lab["prefix"], args.node, n) for n in running]
        print(f"stopped: {stopped_by}")
        print(f"{len(running)} VMs Running on {args.node}, each answering HTTP")
        if costs:
            mean = {k: sum(c[k] for c in costs) / len(costs) / 1024 for k in costs[0]}
            beyond = mean["launcher"] + mean["libvirtd"] + mean["QEMU"] - mean["guest RAM"]
            print("per-VM memory (PSS, mean): " + ", ".join(f"{k} {v:.1f} MiB" for k, v in mean.items()) +
                  f"; overhead beyond guest RAM {beyond:.1f} MiB (the scheduler books "
                  f"{VM_OVERHEAD_BYTES / MIB:.0f} MiB)")
        offered, booked = node_memory(args.node)
        print(f"host memory left (MemAvailable): {mem_available_kib() // 1024} MiB; scheduler: {args.node} offers "
              f"{offered} to guests, {booked} booked")
    finally:
        if not args.keep:
            delete_all(names)
            if before is not None:
                restore_ratio(workdir, before)


if __name__ == "__main__":
    entry.run(main, "density.py")
