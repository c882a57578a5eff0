"""What an idle Running VM costs, printed: CPU (% of one core, over a window) and memory (PSS) of its
QEMU, its launcher and its private libvirtd, and CPU of its node's handler and of the scheduler.
Needs a lab with the VM Running (scripts/lab.sh makes one with testvm); the window starts once its
QEMU has run --settle seconds, so a guest just started is measured idle, not booting. Usage:
    .venv/bin/python bench/idle.py [--vm testvm] [--seconds 30] [--settle 15] [--state-dir /var/lib/virtbus/lab]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import entry  # bench/entry.py, beside this script
from procstat import TICKS, age_s, comm, cpu_ticks, netns_pids, pss_kib, read_pid  # bench/procstat.py

# A guest just started is still booting (~2 s to its marker under TCG) and running its init: its QEMU
# is idle only some seconds later. Measured from this age of its QEMU on (--settle).
SETTLED_S = 15.0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--vm", default="testvm")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--settle", type=float, default=SETTLED_S, help="seconds the VM's QEMU has run before the window")
    p.add_argument("--state-dir", default="/var/lib/virtbus/lab")
    args = p.parse_args()
    root = Path(args.state_dir)
    lab = json.loads((root / "lab.json").read_text())  # none: entry says there is no lab
    node = next((n for n in lab["nodes"] if (root / "nodes" / n / "vmis" / args.vm / "launcher.pid").exists()), None)
    pod = netns_pids(f"{lab['prefix']}-{node}-{args.vm}") if node is not None else []
    qemu = next((pid for pid in pod if comm(pid).startswith("qemu-system")), None)
    libvirtd = next((pid for pid in pod if comm(pid) == "libvirtd"), None)
    if node is None or qemu is None or libvirtd is None:
        raise entry.BenchError(f"{args.vm} is not running on any node of the lab at {root}: start it first "
                               f"(virtbus start {args.vm} --wait)")
    procs = {
        "QEMU": qemu,
        "launcher": read_pid(root / "nodes" / node / "vmis" / args.vm / "launcher.pid"),
        "libvirtd": libvirtd,
        f"handler ({node})": read_pid(root / "pids" / f"handler-{node}.pid"),
        "scheduler": read_pid(root / "pids" / "scheduler.pid"),
    }
    if (wait := args.settle - age_s(qemu)) > 0:
        print(f"{args.vm} started {args.settle - wait:.0f}s ago: waiting {wait:.0f}s more for its guest to settle",
              flush=True)
        time.sleep(wait)
    before = {name: cpu_ticks(pid) for name, pid in procs.items()}
    t0 = time.monotonic()
    time.sleep(args.seconds)
    took = time.monotonic() - t0
    after = {name: cpu_ticks(pid) for name, pid in procs.items()}
    cpu = {name: (after[name] - before[name]) / TICKS / took * 100 for name in procs}
    print(f"idle {args.vm} on {node} over {took:.0f}s, CPU in % of one core: " +
          ", ".join(f"{name} {value:.2f}" for name, value in cpu.items()))
    per_vm = {name: pss_kib(procs[name]) for name in ("QEMU", "launcher", "libvirtd")}
    print("per-VM memory (PSS): " + ", ".join(f"{name} {kib / 1024:.1f} MiB" for name, kib in per_vm.items()) +
          f"; total {sum(per_vm.values()) / 1024:.1f} MiB")


if __name__ == "__main__":
    entry.run(main, "idle.py")
