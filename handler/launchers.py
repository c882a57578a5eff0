"""Launcher processes of one node: spawn, find again after a handler restart, end, clean up after.

A launcher runs in its own session and process group, so it outlives the handler; its pidfile
(``<vmi dir>/launcher.pid`` holding "pid uid") is how a new handler re-adopts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import structlog

from handler.launchfork import ForkedProcess, ForkFailed, ForkServer
from proto.errors import Code
from servicekit import cpugroup, launcherlock, processes
from servicekit.netlink import KernelNetlink, Netlink, NetlinkError
from servicekit.paths import UnsafeName, path_under, safe_name

log = structlog.get_logger()


@dataclass
class Launcher:
    vmi: str
    uid: str
    pid: int
    # None when adopted from an earlier handler
    proc: subprocess.Popen[bytes] | ForkedProcess | None = None

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return _is_launcher(self.pid, self.uid)

    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc is not None else None

    def lost_the_race(self) -> bool:
        """It found another launcher running its VMI and left, touching nothing."""
        return self.returncode() == launcherlock.EXIT_ALREADY_RUNNING


@dataclass(frozen=True)
class NodePaths:
    state_dir: Path  # <state>/nodes/<node>
    log_dir: Path

    def vmi_dir(self, vmi: str) -> Path:
        """Raises UnsafeName for anything but a safe name: a VMI key of ``/`` is no directory of ours."""
        return path_under(self.state_dir / "vmis", vmi, what="VMI name")

    @property
    def images(self) -> Path:
        return self.state_dir / "images"


class Launchers:
    def __init__(self, paths: NodePaths, *, node: str, nats_url: str, netns_prefix: str, kvm: bool,
                 node_netns: str | None = None, creds: str | None = None, netlink: Netlink | None = None,
                 host_disk_dirs: tuple[str, ...] = (), ovs_db: str | None = None, fork: bool = False,
                 cpu_groups: dict[str, Path] | None = None) -> None:
        self.paths = paths
        self.cpu_groups = cpu_groups or {}  # the node's guests' and launches' CPU groups (servicekit.cpugroup)
        # launchers forked from a pre-imported interpreter (launcher.forkserver), else spawned afresh
        self.fork_server = ForkServer(paths.log_dir / f"forkserver-{node}.log") if fork else None
        self.warming: subprocess.Popen[bytes] | None = None  # launcher.warmcaps, once per start
        self.ovs_db = ovs_db  # the node's Open vSwitch database, for ovs NICs (--ovs-db)
        self.netlink: Netlink = netlink or KernelNetlink()  # only its namespace operations are used here
        self.node = node
        self.nats_url = nats_url
        self.netns_prefix = netns_prefix
        self.kvm = kvm
        self.node_netns = node_netns
        self.creds = creds
        self.host_disk_dirs = host_disk_dirs  # where the operator lets hostDisks be (none: nowhere)
        # whether the node's shard republishes its copies (handler.nodevmis.republishes): a launcher
        # asks the server nothing as it starts, so it is told
        self.copies_republished = True
        self.running: dict[str, Launcher] = {}

    def pod_netns(self, vmi: str) -> str:
        return f"{self.netns_prefix}-{self.node}-{vmi}"

    def adopt_all(self) -> list[Launcher]:
        found = []
        for pidfile in sorted((self.paths.state_dir / "vmis").glob(f"*/{launcherlock.PID_FILE}")):
            launcher = self.adopt(pidfile.parent.name)
            if launcher is not None:
                found.append(launcher)
        return found

    def adopt(self, vmi: str) -> Launcher | None:
        """The live launcher that holds the VMI's lock, from the pidfile it wrote."""
        try:
            vmi_dir = self.paths.vmi_dir(safe_name(vmi))
            written = launcherlock.read_pid(vmi_dir)
            if written is None or not launcherlock.held(vmi_dir):
                return None
            launcher = Launcher(vmi, safe_name(written[1], "uid"), written[0])
        except UnsafeName:  # a directory or pidfile no launcher of ours wrote
            return None
        if not launcher.alive():
            return None
        self.running[vmi] = launcher
        log.info("adopted launcher", vmi=vmi, pid=launcher.pid)
        return launcher

    def spawn(self, vmi: str, uid: str, pod_ip: str | None = None, pod_gateway: str | None = None,
              secondary: list[str] | None = None, migration: str | None = None) -> Launcher:
        """migration: the uid of the live migration this launcher is the target of."""
        vmi_dir = self.paths.vmi_dir(vmi)
        safe_name(uid, "uid")  # an argument of the launcher and a word of its pidfile
        vmi_dir.mkdir(parents=True, exist_ok=True)
        self.paths.log_dir.mkdir(parents=True, exist_ok=True)
        cmd = ["--vmi", vmi, "--uid", uid, "--node", self.node,
               "--server", self.nats_url, "--node-dir", str(self.paths.state_dir),
               "--pod-netns", self.pod_netns(vmi), "--kvm" if self.kvm else "--no-kvm"]
        for nic in secondary or []:  # interface=bridge=address/prefix[=type=vlan]
            cmd += ["--secondary", nic]
        if self.ovs_db:
            cmd += ["--ovs-db", self.ovs_db]
        if self.node_netns:
            cmd += ["--node-netns", self.node_netns]
        if self.creds:  # the node's own credentials: a launcher may do what its node may, no more
            cmd += ["--creds", self.creds]
        if pod_ip and pod_gateway:
            cmd += ["--pod-ip", pod_ip, "--pod-gateway", pod_gateway]
        for directory in self.host_disk_dirs:
            cmd += ["--host-disk-dir", directory]
        if cpugroup.GUESTS in self.cpu_groups:
            cmd += ["--guest-cpu-group", str(self.cpu_groups[cpugroup.GUESTS])]
        if cpugroup.LAUNCHES in self.cpu_groups:
            cmd += ["--launch-cpu-group", str(self.cpu_groups[cpugroup.LAUNCHES])]
        if not self.copies_republished:
            cmd += ["--own-vmi-by-consumer"]
        if migration is not None:
            cmd += ["--migration-target", safe_name(migration, "migration uid")]
        log_path = self.paths.log_dir / f"launcher-{self.node}-{safe_name(vmi)}.log"
        proc: subprocess.Popen[bytes] | ForkedProcess | None = None
        if self.fork_server is not None:
            try:
                self.fork_server.start()
                proc = self.fork_server.fork(cmd, log_path)
            except (OSError, ForkFailed) as exc:
                log.warning("launcher fork server failed; spawning the launcher afresh", vmi=vmi, error=str(exc))
        if proc is None:
            with open(log_path, "ab") as logf:
                proc = subprocess.Popen([sys.executable, "-m", "launcher", *cmd], stdin=subprocess.DEVNULL,
                                        stdout=logf, stderr=logf, start_new_session=True, close_fds=True)
        # The launcher writes its pidfile itself, once it holds the VMI's lock (servicekit.launcherlock).
        launcher = Launcher(vmi, uid, proc.pid, proc)
        self.running[vmi] = launcher
        log.info("spawned launcher", vmi=vmi, uid=uid, pid=proc.pid, forked=isinstance(proc, ForkedProcess))
        return launcher

    def start_fork_server(self) -> None:
        """Before the first launch, so that it finds the imports done."""
        if self.fork_server is not None:
            try:
                self.fork_server.start()
            except OSError as exc:
                log.warning("launcher fork server not started; launchers are spawned afresh", error=str(exc))

    def warm_caps(self) -> None:
        """Once, as the node starts (with the fork server): libvirt's probe of QEMU into the node's
        cache before the first launch needs it (launcher.warmcaps). Best effort: the handler waits for
        it (``wait_warm``, bounded) before it registers the node, and a launch probes if it failed."""
        if self.fork_server is None or self.warming is not None:
            return
        cmd = [sys.executable, "-m", "launcher.warmcaps", "--node-dir", str(self.paths.state_dir)]
        if self.node_netns:
            cmd += ["--netns", self.node_netns]
        try:
            with open(self.paths.log_dir / f"warmcaps-{self.node}.log", "ab") as logf:
                self.warming = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                                start_new_session=True, close_fds=True)
        except OSError as exc:
            log.warning("QEMU capabilities not warmed; the first launch probes them", error=str(exc))

    def reap_warming(self) -> bool:
        """The warming process, once it has ended, reaped: it stayed a zombie for the handler's life
        (held here so that it runs once per start, and nothing waited for it). True while it runs."""
        if self.warming is None or self.warming.returncode is not None:
            return False
        code = self.warming.poll()
        if code:
            log.warning("QEMU capabilities not warmed; the first launch probes them", exit_code=code)
        return code is None

    async def wait_warm(self, within: float) -> bool:
        """Wait, at most ``within`` seconds, for the probe of QEMU's capabilities to end (a pidfd on
        the loop). True once it has ended, or when none runs; False when it still runs (it hangs)."""
        warming = self.warming
        if warming is None or not self.reap_warming():
            return True
        try:
            fd = os.pidfd_open(warming.pid)
        except OSError:
            return not self.reap_warming()  # ended and reaped meanwhile
        ended = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_reader(fd, ended.set)
        try:
            async with asyncio.timeout(within):
                await ended.wait()
        except TimeoutError:
            pass
        finally:
            loop.remove_reader(fd)
            os.close(fd)
        return not self.reap_warming()

    def stop_fork_server(self) -> None:
        if self.warming is not None and self.warming.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.warming.wait(10.0)  # seconds at most; it stops its own libvirtd

        if self.fork_server is not None:
            self.fork_server.stop()

    async def terminate(self, launcher: Launcher, grace: float = 60.0) -> None:
        """SIGTERM (the launcher shuts its guest down and cleans up), SIGKILL if it has not gone after
        ``grace``. The wait is on the loop, not in a worker thread: ending many launchers at once, each
        waiting out its guest's grace, took every thread of the loop's pool (six on two cores) for a
        minute, and the node's lease renewal and every other launch queued behind them."""
        killed, left = await processes.end_on_loop([launcher.pid], grace, is_alive=lambda _: launcher.alive())
        if killed:  # alive() reaps ours (a poll) and never blocks
            log.warning("launcher did not end in its grace period; killed it", vmi=launcher.vmi,
                        pid=launcher.pid, grace=grace)
        if left:  # the supervision loop notices its end, as any launcher's
            log.warning("killed launcher has not gone (uninterruptible?)", vmi=launcher.vmi, pid=launcher.pid)

    def forget(self, vmi: str) -> None:
        self.running.pop(vmi, None)

    def clean_up(self, vmi: str) -> None:
        """Remove whatever a dead launcher left: processes in its pod netns, the netns, its files."""
        try:
            vmi_dir = self.paths.vmi_dir(vmi)
        except UnsafeName as exc:
            log.warning("refusing to clean up", vmi=vmi[:100], reason=str(exc))
            return
        netns = self.pod_netns(vmi)
        for pid in netns_pids(netns, self.netlink):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.netlink.delete_netns(netns)
        except NetlinkError as exc:
            if exc.code is not Code.NOT_FOUND:  # most launchers remove their own pod netns
                log.warning("pod netns not removed", vmi=vmi, netns=netns, error=exc.message)
        shutil.rmtree(vmi_dir, ignore_errors=True)

    def kill_guest(self, vmi: str) -> list[int]:
        """SIGKILL the QEMU in a VMI's pod at once, whatever its launcher is doing (frozen, say):
        the instance was failed over and runs elsewhere now. Returns the pids killed."""
        killed = []
        for pid in netns_pids(self.pod_netns(vmi), self.netlink):
            try:
                if Path(f"/proc/{pid}/comm").read_text().startswith("qemu"):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            except (FileNotFoundError, ProcessLookupError):
                pass
        return killed


def netns_pids(netns: str, netlink: Netlink | None = None) -> list[int]:
    """The processes in the named namespace; none if it is not there."""
    try:
        return (netlink or KernelNetlink()).netns_pids(netns)
    except NetlinkError:
        return []


def _is_launcher(pid: int, uid: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"launcher" in cmdline and uid.encode() in cmdline
