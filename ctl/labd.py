"""``python -m ctl.labd``: the lab's supervisor. It is the parent (and child subreaper) of
nats-server, the scheduler, the handlers and everything they leave orphaned, so every process the
lab starts is reaped by the lab; on SIGTERM it ends them in order: launchers, handlers, scheduler, NATS.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from ctl import labovs
from ctl.lab import SCHEDULERS, LabConfig, _read_pid, _wait_port, lab_cpu_groups
from ctl.labdhcp import DHCP_SEGMENTS, dnsmasq_command
from servicekit import cpugroup, credentials, natsserver, processes

PR_SET_CHILD_SUBREAPER = 36


def _reap() -> dict[int, int]:
    """Reap every child that has ended, the lab's orphans too; their exit codes by pid (``-N``: signal N).
    Popen can no longer learn a status reaped here (its ``poll()`` then says 0), so this is where it is kept."""
    ended: dict[int, int] = {}
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return ended
        if pid == 0:
            return ended
        ended[pid] = os.waitstatus_to_exitcode(status)


def describe_exit(code: int) -> str:
    """How a service ended, as systemd says it: ``exited (status 1)``, ``killed by SIGKILL``."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited (status {code})"


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m ctl.labd")
    p.add_argument("--state-dir", required=True)
    cfg = LabConfig.load(p.parse_args().state_dir)
    if cfg is None:
        sys.exit("no lab.json")
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    logs = cfg.root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(name: str, cmd: list[str]) -> None:
        # Each service a session, so (with autogroups) a scheduling group, of its own, as systemd units
        # are cgroups of their own: in one group, the whole control plane would weigh as much as one launch.
        with open(logs / f"{name}.log", "ab") as logf:
            procs[name] = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                           start_new_session=True)
        cfg.pidfile(name).parent.mkdir(parents=True, exist_ok=True)
        tmp = cfg.pidfile(name).with_suffix(".tmp")  # a reader never sees it half written
        tmp.write_text(f"{procs[name].pid}\n")
        tmp.rename(cfg.pidfile(name))

    spawn("nats-server", [natsserver.executable(), "-c", str(cfg.nats_config)])
    _wait_port(cfg.port, 15)
    py = sys.executable
    host_disks = Path(os.path.abspath(cfg.root / "host-disks"))
    host_disks.mkdir(exist_ok=True)
    for name in SCHEDULERS:  # two: one leads by the lease, the other takes over when it goes
        spawn(name, [py, "-m", "scheduler", "--server", cfg.url, "--creds", cfg.creds("control"),
                     *(["--metrics-address", f"127.0.0.1:{cfg.metrics[name]}"] if name in cfg.metrics else [])])
    ovs_nodes = list(cfg.addresses) if labovs.available() else []
    for node in ovs_nodes:  # each node's own Open vSwitch, before its handler lists its bridges
        for name, cmd in labovs.daemon_commands(cfg, node):
            spawn(name, cmd)
    for node in list(ovs_nodes):
        try:
            labovs.make_bridge(cfg, node)
        except (RuntimeError, subprocess.SubprocessError) as exc:  # the lab runs on, that node without OVS
            print(f"labd: no Open vSwitch bridge on {node}: {exc}", flush=True)
            ovs_nodes.remove(node)
    for node, address in cfg.addresses.items():
        spawn(f"handler-{node}", [
            py, "-m", "handler", "--node", node, "--server", cfg.url, "--state-dir", str(cfg.root),
            "--creds", cfg.creds(credentials.node_user(node)),
            "--netns-prefix", cfg.prefix, "--address", address, "--netns", cfg.node_netns(node),
            *(["--metrics-address", f"127.0.0.1:{cfg.metrics[node]}"] if node in cfg.metrics else []),
            *(["--probe-kernel", cfg.probe_kernel] if cfg.probe_kernel else []),
            # the lab's nodes share one host: hostDisks may be under <state>/host-disks
            "--host-disk-dir", str(host_disks),
            *(["--ovs-db", labovs.db_url(cfg, node)] if node in ovs_nodes else [])])
    for segment in DHCP_SEGMENTS if shutil.which("dnsmasq") else ():  # the layer-2 segments' own DHCP
        spawn(f"dnsmasq-{segment.name}", dnsmasq_command(cfg.outside_netns, segment, cfg.root))
    commands = {name: [str(a) for a in proc.args] for name, proc in procs.items()}  # type: ignore[union-attr]
    while not stop:
        ended = _reap()
        for name, proc in list(procs.items()):
            code = ended.get(proc.pid)
            if code is None and proc.poll() is not None:  # reaped by Popen itself, before _reap saw it
                code = proc.returncode
            if code is not None and not stop:  # a crashed service comes back, like a systemd unit
                print(f"labd: {name} {describe_exit(code)}; restarting", flush=True)
                time.sleep(1.0)
                spawn(name, commands[name])
        time.sleep(0.5)
    # Handlers first, so none respawns a launcher; then launchers end their domains and libvirtds.
    processes.end([procs[n].pid for n in procs if n.startswith("handler-")], 10)
    launchers = [pid for pid in (_read_pid(f) for f in Path(cfg.root).glob("nodes/*/vmis/*/launcher.pid"))
                 if pid is not None and processes.alive(pid)]
    processes.end(launchers, 90)
    processes.end([procs[name].pid for name in SCHEDULERS], 10)
    processes.end([procs["nats-server"].pid], 10)
    processes.end([procs[n].pid for n in procs if n.startswith(("dnsmasq-", "ovs"))], 10)
    # Whatever is left was orphaned to us (a launcher that had not written its pid yet, what a killed
    # one left): said, then ended, so nothing of the lab outlives it under whatever reaps above us.
    for pid in processes.children():
        print(f"labd: ending pid {pid} ({processes.command(pid)}), left behind", flush=True)
    processes.end_children(10)
    for group in lab_cpu_groups(cfg):  # the nodes' guests' and launches' CPU groups, now empty
        if not cpugroup.remove(group):
            print(f"labd: CPU group {group} not removed: {cpugroup.members(group)} still in it", flush=True)


if __name__ == "__main__":
    main()
