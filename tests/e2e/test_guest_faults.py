"""Launcher and guest faults, done for real on a lab (issue 9): a guest paused and resumed, the
launcher's libvirtd SIGKILLed, QEMU SIGKILLed, the launcher SIGKILLed, a full state dir, a guest that
powers itself off. Each checks what the VMI says, what was cleaned up and what came back.

The tests run in file order on one VM ``faults`` (pinned to node2) and share the lab; each prints how
long its recovery took."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from launcher import priority
from launcher.libvirtd import is_qemu_of
from servicekit import cpugroup, processes
from tests.conftest import EXAMPLES
from tests.e2e.conftest import Lab

pytestmark = pytest.mark.e2e
MARKER = "VIRTBUS-GUEST-READY"
VM = "faults"
NODE = "node2"


def manifest(tmp: Path, name: str, node: str, strategy: str) -> str:
    doc = yaml.safe_load((EXAMPLES / "testvm-masquerade.yaml").read_text())
    doc["metadata"]["name"] = name
    del doc["spec"]["running"]
    doc["spec"]["runStrategy"] = strategy
    doc["spec"]["template"]["spec"]["nodeSelector"] = {"kubernetes.io/hostname": node}
    path = tmp / f"{name}-{strategy}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def vmi(lab: Lab, name: str = VM) -> dict[str, Any] | None:
    done = lab.cli("get", "vmis", name, "-o", "json", check=False)
    return json.loads(done.stdout) if done.returncode == 0 else None


def vm_status(lab: Lab, name: str = VM) -> str:
    got = lab.json("get", "vms", name)
    assert isinstance(got, dict)
    return str(got["status"]["printableStatus"])


def condition(item: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    return next((c for c in (item or {}).get("status", {}).get("conditions", []) if c["type"] == kind), None)


def wait(what: str, probe: Callable[[], Any], lab: Lab, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{lab.logs()}")
        time.sleep(0.5)


def running(lab: Lab, name: str = VM, other_than: str | None = None) -> dict[str, Any]:
    """The VMI once Running (a new instance when other_than names the old uid), its guest booted."""
    def probe() -> dict[str, Any] | None:
        item = vmi(lab, name)
        ok = item is not None and item["status"]["phase"] == "Running" and item["metadata"]["uid"] != other_than
        return item if ok else None

    item: dict[str, Any] = wait(f"{name} Running", probe, lab, timeout=300)
    lab.cli("console", name, "--log", "--until", MARKER, "--timeout", "180")
    return item


def vmi_dir(lab: Lab, name: str = VM, node: str = NODE) -> Path:
    return lab.state_dir / "nodes" / node / "vmis" / name


def pid_in(path: Path) -> int:
    return int(path.read_text().split()[0])


def qemu_pid(lab: Lab, name: str = VM, node: str = NODE) -> int:
    """The domain's qemu-system process: in the VM's pod namespace, named guest=<vm> by libvirt."""
    pod = f"{lab.prefix}-{node}-{name}"
    out = subprocess.run(["ip", "netns", "pids", pod], capture_output=True, text=True, check=False).stdout
    found = [int(p) for p in out.split() if is_qemu_of(int(p), name)]
    assert len(found) == 1, f"QEMU of {name} in {pod}: {found}"
    return found[0]


def mark_pod(lab: Lab, name: str = VM, node: str = NODE) -> None:
    """A marker link (a bridge) in the VM's pod namespace (never the root one): a later run that reuses the
    namespace's name starts without it only if this namespace was deleted."""
    subprocess.run(["ip", "-n", f"{lab.prefix}-{node}-{name}", "link", "add", "vbmark", "type", "bridge"], check=True)


def pod_marked(lab: Lab, name: str = VM, node: str = NODE) -> bool:
    return subprocess.run(["ip", "-n", f"{lab.prefix}-{node}-{name}", "link", "show", "vbmark"],
                          capture_output=True, check=False).returncode == 0


def events(lab: Lab, name: str = VM) -> list[str]:
    return [line for line in lab.cli("get", "events").stdout.splitlines() if f"/{name} " in line]


def nices(pid: int) -> set[int]:
    """The nice value of every thread of pid (field 19 of /proc/PID/task/TID/stat)."""
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            found.add(int(task.joinpath("stat").read_text().rsplit(")", 1)[1].split()[16]))
    return found


def vcpu_policies(pid: int) -> set[int]:
    """The scheduling policy of each of QEMU's vCPU threads (named ``CPU n/TCG`` or ``CPU n/KVM``)."""
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a worker thread that ended meanwhile
            if task.joinpath("comm").read_text().startswith("CPU "):
                found.add(os.sched_getscheduler(int(task.name)))
    return found


def virsh(launcher: int, *args: str) -> None:
    """virsh against a launcher's own libvirtd, reachable only inside its mount namespace."""
    subprocess.run(["nsenter", "-t", str(launcher), "-m", "virsh", "-q", "-c", "qemu:///system", *args],
                   check=True, capture_output=True, timeout=60)


def gone(pid: int) -> bool:
    return not processes.alive(pid)


@pytest.fixture(scope="module")
def faults(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tmp = tmp_path_factory.mktemp("faults")
    lab.cli("apply", "-f", manifest(tmp, VM, NODE, "Always"))
    try:
        yield tmp
    finally:
        lab.cli("delete", VM, "--wait", "--timeout", "180", check=False)


def test_the_guest_and_its_launch_run_below_the_control_plane(lab: Lab, faults: Path) -> None:
    running(lab)
    launcher = pid_in(vmi_dir(lab) / "launcher.pid")
    libvirtd = pid_in(vmi_dir(lab) / "libvirtd.pid")
    for part in ("nats-server", "scheduler", f"handler-{NODE}"):  # the control plane keeps the default
        assert nices(pid_in(lab.state_dir / "pids" / f"{part}.pid")) == {0}, part
    qemu = qemu_pid(lab)
    assert nices(launcher) == nices(libvirtd) == {priority.LAUNCHER_NICE}
    assert nices(qemu) == {priority.GUEST_NICE}
    # its vCPU below QEMU's own threads too, as it has been since it first ran (domain.py's vcpusched)
    assert vcpu_policies(qemu) == {os.SCHED_IDLE}
    # each is a session, so a scheduling group, of its own: the groups are lowered too
    if priority.group_nice(launcher) is not None:
        assert priority.group_nice(launcher) == priority.group_nice(libvirtd) == priority.LAUNCHER_NICE
        assert priority.group_nice(qemu) == priority.GUEST_NICE
        assert priority.group_nice(pid_in(lab.state_dir / "pids" / "scheduler.pid")) == 0
    # and all of the node's guests weigh as one group, and all its launches as another, however many
    guests = cpugroup.locate(cpugroup.group_name(lab.prefix, NODE, cpugroup.GUESTS))
    launches = cpugroup.locate(cpugroup.group_name(lab.prefix, NODE, cpugroup.LAUNCHES))
    if guests is not None and launches is not None:
        assert cpugroup.members(guests) == [qemu]
        assert {launcher, libvirtd} <= set(cpugroup.members(launches)) and qemu not in cpugroup.members(launches)


def test_a_paused_guest_shows_paused_and_resumes(lab: Lab, faults: Path) -> None:
    first = running(lab)
    launcher = pid_in(vmi_dir(lab) / "launcher.pid")
    virsh(launcher, "suspend", VM)
    started = time.monotonic()
    paused = wait("Paused condition", lambda: (c := condition(vmi(lab), "Paused")) and c["status"] == "True" and c,
                  lab, timeout=30)
    print(f"paused -> condition: {time.monotonic() - started:.1f}s")
    assert paused["reason"] == "PausedByUser"
    item = vmi(lab)
    assert item is not None and item["status"]["phase"] == "Running"  # as KubeVirt: a pause is no phase
    assert vm_status(lab) == "Paused"
    virsh(launcher, "resume", VM)
    resumed = wait("Paused False", lambda: (c := condition(vmi(lab), "Paused")) and c["status"] == "False" and c,
                   lab, timeout=30)
    assert resumed["reason"] == "Resumed" and vm_status(lab) == "Running"
    after = vmi(lab)
    assert after is not None and after["metadata"]["uid"] == first["metadata"]["uid"]


def test_a_killed_libvirtd_is_noticed_and_restarted_the_guest_runs_on(lab: Lab, faults: Path) -> None:
    item = running(lab)
    qemu = qemu_pid(lab)
    launcher = pid_in(vmi_dir(lab) / "launcher.pid")
    # where the launcher finds QEMU when no libvirtd is left to destroy it (PrivateLibvirtd.kill_qemu)
    pidfile = subprocess.run(["nsenter", "-t", str(launcher), "-m", "cat", f"/run/libvirt/qemu/{VM}.pid"],
                             capture_output=True, text=True, check=True, timeout=30).stdout
    assert int(pidfile) == qemu
    libvirtd = pid_in(vmi_dir(lab) / "libvirtd.pid")
    # libvirtd started on one CPU (launcher.libvirtdstart.spawn): it, and the guest, run on them all again
    every = {frozenset(os.sched_getaffinity(launcher))}
    assert len(next(iter(every))) == os.cpu_count() and cpus(qemu) == cpus(libvirtd) == every
    os.kill(libvirtd, signal.SIGKILL)
    started = time.monotonic()
    wait("LibvirtdDied event", lambda: any("LibvirtdDied" in e for e in events(lab)), lab, timeout=30)
    noticed = time.monotonic() - started
    back = wait("LibvirtdLost False", lambda: (c := condition(vmi(lab), "LibvirtdLost")) and c["status"] == "False"
                and c, lab, timeout=60)
    print(f"libvirtd killed -> noticed {noticed:.1f}s, restarted {time.monotonic() - started:.1f}s")
    assert back["reason"] == "LibvirtdRestarted"
    again = vmi(lab)
    assert again is not None and again["status"]["phase"] == "Running"
    assert again["metadata"]["uid"] == item["metadata"]["uid"]  # the same instance...
    assert qemu_pid(lab) == qemu  # ...the same QEMU, now under a new libvirtd
    assert pid_in(vmi_dir(lab) / "libvirtd.pid") != libvirtd
    again_libvirtd = pid_in(vmi_dir(lab) / "libvirtd.pid")
    assert nices(again_libvirtd) == {priority.LAUNCHER_NICE}  # still below the control plane
    assert cpus(again_libvirtd) == every
    assert priority.group_nice(again_libvirtd) in (None, priority.LAUNCHER_NICE)
    # still managed: the guest answers on its console, and a pause is still seen
    lab.cli("console", VM, "--send", "echo after-$((40+7))\\n")
    assert "after-47" in lab.cli("console", VM, "--log", "--until", "after-47", "--timeout", "60").stdout


def test_a_killed_qemu_fails_the_vmi_and_always_runs_it_again(lab: Lab, faults: Path) -> None:
    item = running(lab)
    qemu, launcher = qemu_pid(lab), pid_in(vmi_dir(lab) / "launcher.pid")
    libvirtd = pid_in(vmi_dir(lab) / "libvirtd.pid")
    mark_pod(lab)
    os.kill(qemu, signal.SIGKILL)
    started = time.monotonic()
    wait("the Failed event", lambda: any("QEMU exited unexpectedly" in e for e in events(lab)), lab, timeout=60)
    print(f"qemu killed -> Failed: {time.monotonic() - started:.1f}s")
    wait("the launcher to leave", lambda: gone(launcher) and gone(libvirtd), lab, timeout=60)
    again = running(lab, other_than=item["metadata"]["uid"])
    print(f"qemu killed -> Running again: {time.monotonic() - started:.1f}s")
    assert again["status"]["nodeName"] == NODE and qemu_pid(lab) != qemu
    assert not pod_marked(lab)  # the old run's namespace went with it


def test_a_killed_launcher_fails_the_vmi_its_pod_is_cleaned_and_always_runs_it_again(lab: Lab, faults: Path) -> None:
    item = running(lab)
    qemu, launcher = qemu_pid(lab), pid_in(vmi_dir(lab) / "launcher.pid")
    libvirtd = pid_in(vmi_dir(lab) / "libvirtd.pid")
    mark_pod(lab)
    os.kill(launcher, signal.SIGKILL)
    started = time.monotonic()
    wait("the Failed event", lambda: any("launcher killed by SIGKILL" in e for e in events(lab)), lab, timeout=60)
    print(f"launcher killed -> Failed: {time.monotonic() - started:.1f}s")
    # its QEMU and libvirtd do not outlive it, nor does its pod namespace (until the next run's)
    wait("QEMU and libvirtd gone", lambda: gone(qemu) and gone(libvirtd), lab, timeout=30)
    again = running(lab, other_than=item["metadata"]["uid"])
    print(f"launcher killed -> Running again: {time.monotonic() - started:.1f}s")
    assert again["status"]["nodeName"] == NODE
    new_qemu = qemu_pid(lab)
    assert new_qemu != qemu
    assert [p for p in processes_named_qemu_of(VM) if p != new_qemu] == []  # one QEMU for the VM, no leftover
    assert not pod_marked(lab)  # the handler deleted the dead launcher's namespace


def test_a_launcher_ended_while_its_libvirtd_is_gone_leaves_no_qemu(lab: Lab, faults: Path) -> None:
    """libvirtd dead (or ended mid-start) when the launcher is told to end: no libvirtd destroys
    the domain, so the launcher, QEMU's subreaper, must end it itself rather than leave it running."""
    item = running(lab)
    qemu, launcher = qemu_pid(lab), pid_in(vmi_dir(lab) / "launcher.pid")
    os.kill(pid_in(vmi_dir(lab) / "libvirtd.pid"), signal.SIGKILL)
    os.kill(launcher, signal.SIGTERM)  # before it has a new libvirtd to destroy the domain by
    wait("the launcher to leave", lambda: gone(launcher), lab, timeout=60)
    wait("its QEMU gone with it", lambda: gone(qemu), lab, timeout=15)
    again = running(lab, other_than=item["metadata"]["uid"])  # runStrategy Always: a new one
    assert again["status"]["nodeName"] == NODE
    assert [p for p in processes_named_qemu_of(VM) if p != qemu_pid(lab)] == []


def cpus(pid: int) -> set[frozenset[int]]:
    """The CPUs each thread of ``pid`` may run on."""
    return {frozenset(os.sched_getaffinity(int(tid))) for tid in os.listdir(f"/proc/{pid}/task")}


def processes_named_qemu_of(name: str) -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and is_qemu_of(int(p.name), name)]


@contextlib.contextmanager
def full_dir(path: Path, filler_bytes: int | None = None) -> Iterator[Path]:
    """A small tmpfs over a node's directory (room for one VMI and its image once freed), filled up;
    unmounted whatever happens. With filler_bytes, the filler takes that much and the rest stays free."""
    path.mkdir(parents=True, exist_ok=True)
    running_here = [d.name for d in (path / "vmis").iterdir()] if (path / "vmis").is_dir() else []
    assert running_here == [], f"{path} is in use by {running_here}"
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0755", "vbtest-full", str(path)], check=True)
    filler = path / ".filler"
    try:
        with contextlib.suppress(OSError), open(filler, "wb") as f:  # until ENOSPC, also on close
            while filler_bytes is None or f.tell() < filler_bytes:
                f.write(b"\0" * 4096)
                f.flush()
        yield filler
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_state_dir_fails_the_launch_with_the_reason_and_wedges_nothing(lab: Lab, faults: Path) -> None:
    item = running(lab)  # on node2, while node1's disk is full
    name = "diskfull"
    # the node's whole state dir: its VMIs' files, its image cache, libvirt's cache
    with full_dir(lab.state_dir / "nodes" / "node1") as filler:
        with pytest.raises(OSError) as exc:  # it is full indeed
            (filler.parent / "probe").write_text("x")
        assert exc.value.errno == errno.ENOSPC
        lab.cli("apply", "-f", manifest(faults, name, "node1", "Always"))
        try:
            started = time.monotonic()
            failed = wait("the Failed event", lambda: [e for e in events(lab, name) if "no space left" in e],
                          lab, timeout=90)
            print(f"disk full -> Failed: {time.monotonic() - started:.1f}s: {failed[0]}")
            assert "launch failed: no space left in the node's state directory" in failed[0]
            wait("CrashLoopBackOff", lambda: vm_status(lab, name) == "CrashLoopBackOff", lab, timeout=60)
            # nothing else wedged: node1 is Ready, the other VM runs on, the handler takes new work
            nodes = lab.json("get", "nodes")
            assert isinstance(nodes, dict)
            ready = {n["metadata"]["name"]: c["status"] for n in nodes["items"]
                     for c in n["status"]["conditions"] if c["type"] == "Ready"}
            assert ready == {"node1": "True", "node2": "True"}
            other = vmi(lab)
            assert other is not None and other["metadata"]["uid"] == item["metadata"]["uid"]
            assert other["status"]["phase"] == "Running"
            filler.unlink()  # space again: the next try of the crash loop runs it
            running(lab, name)
            print(f"disk full -> Running once freed: {time.monotonic() - started:.1f}s")
        finally:
            lab.cli("delete", name, "--wait", "--timeout", "180", check=False)


def with_empty_disk(path: str, capacity: str) -> str:
    doc = yaml.safe_load(Path(path).read_text())
    spec = doc["spec"]["template"]["spec"]
    spec["domain"]["devices"]["disks"].append({"name": "scratch", "disk": {"bus": "virtio"}})
    spec["volumes"].append({"name": "scratch", "emptyDisk": {"capacity": capacity}})
    Path(path).write_text(yaml.safe_dump(doc))
    return path


def test_a_disk_io_error_pauses_the_guest_with_the_reason(lab: Lab, faults: Path) -> None:
    """The guest writes to a disk whose file lies on a filesystem that filled up after the launch (a
    launch whose emptyDisks could not fill up is refused: issue 8's limit): QEMU stops the guest
    (werror=enospc, its default), the VMI says PausedIOError; with room again, a resume lets the
    write finish."""
    name = "iofull"
    with full_dir(lab.state_dir / "nodes" / "node1" / "vmis", filler_bytes=0) as filler:
        lab.cli("apply", "-f", with_empty_disk(manifest(faults, name, "node1", "Always"), "8Mi"))
        try:
            item = running(lab, name)
            with contextlib.suppress(OSError), open(filler, "ab") as f:  # now fill it, until ENOSPC
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            # 8 MiB into the empty disk (the third, vdc), with no room left under it
            write = "dd if=/dev/zero of=/dev/vdc bs=1M count=8 conv=fsync && echo dd-$((40+8))\\n"
            lab.cli("console", name, "--send", write)
            started = time.monotonic()
            paused = wait("PausedIOError", lambda: (c := condition(vmi(lab, name), "Paused")) and c["status"] == "True"
                          and c, lab, timeout=120)
            print(f"disk full under the guest -> Paused: {time.monotonic() - started:.1f}s")
            assert paused["reason"] == "PausedIOError"
            again = vmi(lab, name)
            assert again is not None and again["status"]["phase"] == "Running"
            assert again["metadata"]["uid"] == item["metadata"]["uid"] and vm_status(lab, name) == "Paused"
            filler.unlink()  # room again; as after `virtctl unpause`, the guest goes on
            virsh(pid_in(vmi_dir(lab, name, "node1") / "launcher.pid"), "resume", name)
            wait("Paused False", lambda: (c := condition(vmi(lab, name), "Paused")) and c["status"] == "False",
                 lab, timeout=30)
            assert "dd-48" in lab.cli("console", name, "--log", "--until", "dd-48", "--timeout", "120").stdout
        finally:
            lab.cli("delete", name, "--wait", "--timeout", "180", check=False)


def test_a_guest_poweroff_is_succeeded(lab: Lab, faults: Path) -> None:
    # RerunOnFailure keeps a Succeeded instance (Always would run it again at once)
    lab.cli("apply", "-f", manifest(faults, VM, NODE, "RerunOnFailure"))
    item = running(lab)
    launcher = pid_in(vmi_dir(lab) / "launcher.pid")
    lab.cli("console", VM, "--send", "poweroff\\n")
    started = time.monotonic()
    done = wait("Succeeded", lambda: (v := vmi(lab)) and v["status"]["phase"] != "Running" and v, lab, timeout=90)
    print(f"poweroff -> {done['status']['phase']}: {time.monotonic() - started:.1f}s")
    assert done["status"]["phase"] == "Succeeded" and done["metadata"]["uid"] == item["metadata"]["uid"]
    assert done["status"]["reason"] == "guest shut down"
    wait("the launcher to leave", lambda: gone(launcher), lab, timeout=60)
    assert vm_status(lab) == "Stopped"
    assert f"{lab.prefix}-{NODE}-{VM}" not in lab.netns()


def test_a_guest_kernel_panic_fails_the_vmi_with_the_reason(lab: Lab, faults: Path) -> None:
    """The guest's kernel panics (sysrq c): pvpanic tells libvirt, the VMI is Failed with the reason,
    RerunOnFailure runs it again."""
    lab.cli("apply", "-f", manifest(faults, VM, NODE, "RerunOnFailure"))
    lab.cli("start", VM)  # after a poweroff, RerunOnFailure keeps the VM stopped
    item = running(lab)
    launcher = pid_in(vmi_dir(lab) / "launcher.pid")
    lab.cli("console", VM, "--send", "echo c > /proc/sysrq-trigger\\n")
    started = time.monotonic()
    wait("the Failed event", lambda: any("guest crashed (kernel panic)" in e for e in events(lab)), lab, timeout=90)
    print(f"kernel panic -> Failed: {time.monotonic() - started:.1f}s")
    wait("the launcher to leave", lambda: gone(launcher), lab, timeout=60)
    again = running(lab, other_than=item["metadata"]["uid"])
    print(f"kernel panic -> Running again: {time.monotonic() - started:.1f}s")
    assert again["status"]["phase"] == "Running"
