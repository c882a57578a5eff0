"""virtbus pause / unpause / soft-reboot on a real guest: a paused guest's clock stands still and
its VM prints Paused (its instance stays Running), an unpaused one runs on; a soft reboot boots the
guest afresh in the same instance. One VM, each step timed (``pytest -s`` prints the figures)."""

from __future__ import annotations

import itertools
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from servicekit import processes
from tests.e2e.conftest import Lab
from tests.e2e.test_guest_faults import MARKER, condition, manifest, pid_in, running, vm_status, vmi, vmi_dir, wait

pytestmark = pytest.mark.e2e
VM = "pausevm"
NODE = "node1"
PAUSED_S = 6.0
_reads = itertools.count(101)  # one marker per read, across the module's tests


@pytest.fixture(scope="module")
def pausevm(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    lab.cli("apply", "-f", manifest(tmp_path_factory.mktemp("pause"), VM, NODE, "Always"))
    try:
        yield running(lab, VM)
    finally:
        lab.cli("delete", VM, "--wait", "--timeout", "180", check=False)


class Console:
    """Reads the guest's uptime over its serial console; each read has its own marker, computed by
    the guest's shell so the echo of what was typed never matches."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    def log(self) -> str:
        return self.lab.cli("console", VM, "--log").stdout

    def uptime(self) -> float:
        n = next(_reads)
        self.lab.cli("console", VM, "--send", f"read a b < /proc/uptime; echo UPT-$(({n}-1))-$a-END\\n")
        pattern = re.compile(rf"UPT-{n - 1}-([0-9.]+)-END")
        found = wait(f"uptime read {n}", lambda: pattern.search(self.log()), self.lab, timeout=60)
        return float(found.group(1))


def launcher_events(lab: Lab) -> list[str]:
    """The domain events the launcher saw, for the report of a failure."""
    return [line for log in lab.state_dir.rglob(f"launcher-*-{VM}.log")
            for line in log.read_text(errors="replace").splitlines() if "domain event" in line or "power" in line]


def test_a_paused_guest_stands_still_and_runs_on_when_unpaused(lab: Lab, pausevm: dict[str, object]) -> None:
    first = vmi(lab, VM)
    assert first is not None
    uid = first["metadata"]["uid"]
    console = Console(lab)
    before, t0 = console.uptime(), time.monotonic()
    started = time.monotonic()
    out = lab.cli("pause", "vm", VM, "--wait", "--timeout", "60").stdout
    took = time.monotonic() - started
    assert "Paused" in out and vm_status(lab, VM) == "Paused"
    item = vmi(lab, VM)
    paused = condition(item, "Paused")
    assert paused is not None and paused["status"] == "True" and paused["reason"] == "PausedByUser"
    assert item is not None and item["status"]["phase"] == "Running" and item["metadata"]["uid"] == uid
    print(f"pause --wait -> Paused: {took:.1f}s")
    paused_at = time.monotonic()
    # the pause is the VMI's: the node's handler restarted meanwhile (as systemd restarts it, its
    # launchers running on) changes nothing
    launcher = pid_in(vmi_dir(lab, VM, NODE) / "launcher.pid")
    pidfile = lab.state_dir / "pids" / f"handler-{NODE}.pid"
    handler = pid_in(pidfile)
    os.kill(handler, signal.SIGTERM)
    wait("the handler restarted", lambda: pid_in(pidfile) != handler and processes.alive(pid_in(pidfile)), lab,
         timeout=60)
    time.sleep(max(0.0, PAUSED_S - (time.monotonic() - paused_at)))
    assert vm_status(lab, VM) == "Paused" and pid_in(vmi_dir(lab, VM, NODE) / "launcher.pid") == launcher
    started = time.monotonic()
    lab.cli("unpause", VM, "--wait", "--timeout", "60")
    print(f"unpause --wait -> Running: {time.monotonic() - started:.1f}s")
    assert vm_status(lab, VM) == "Running"
    resumed = condition(vmi(lab, VM), "Paused")
    assert resumed is not None and resumed["status"] == "False" and resumed["reason"] == "Resumed"
    after, t1 = console.uptime(), time.monotonic()
    wall, guest = t1 - t0, after - before
    print(f"paused {PAUSED_S:.0f}s: wall {wall:.1f}s, guest uptime advanced {guest:.1f}s")
    assert guest > 0.5, "the guest runs again"
    assert guest < wall - PAUSED_S + 1.5, f"the guest's clock ran while paused\n{launcher_events(lab)}"


def test_a_soft_reboot_boots_the_guest_again_in_the_same_instance(lab: Lab, pausevm: dict[str, object]) -> None:
    item = vmi(lab, VM)
    assert item is not None
    boots = Console(lab).log().count(MARKER)
    started = time.monotonic()
    lab.cli("soft-reboot", VM)
    wait("the guest's second boot", lambda: Console(lab).log().count(MARKER) > boots, lab, timeout=90)
    took = time.monotonic() - started
    print(f"soft-reboot -> guest ready again: {took:.1f}s")
    uptime = Console(lab).uptime()
    print(f"guest uptime after the reboot: {uptime:.1f}s")
    assert uptime < time.monotonic() - started, "the guest booted afresh"
    again = vmi(lab, VM)
    assert again is not None and again["metadata"]["uid"] == item["metadata"]["uid"]
    assert again["status"]["phase"] == "Running" and vm_status(lab, VM) == "Running"
    # the reboot's own stop of QEMU (libvirt's way through it) is no pause of the guest
    assert condition(again, "Paused") == condition(item, "Paused"), launcher_events(lab)
    events = [line for line in lab.cli("get", "events").stdout.splitlines() if f"/{VM} " in line]
    assert any("SoftReboot" in e for e in events), events


def test_a_paused_vm_stops_by_its_guest_shutting_down_not_by_the_grace_running_out(
        lab: Lab, pausevm: dict[str, object]) -> None:
    """The launcher resumes a paused guest before pressing its power button, so it shuts down at
    once (a paused guest would hear nothing, and be destroyed after its 30 s grace)."""
    lab.cli("pause", VM, "--wait", "--timeout", "60")
    started = time.monotonic()
    lab.cli("stop", VM, "--wait", "--timeout", "120")
    took = time.monotonic() - started
    print(f"stop --wait of a paused VM -> Stopped: {took:.1f}s")
    stopped = [line for line in lab.cli("get", "events").stdout.splitlines() if f"/{VM} " in line and "Stopped" in line]
    assert stopped and "destroyed" not in stopped[-1] and took < 25, (stopped, launcher_events(lab))


def test_a_vm_that_starts_paused_runs_no_guest_code_until_unpaused(lab: Lab,
                                                                   tmp_path_factory: pytest.TempPathFactory) -> None:
    """KubeVirt's startStrategy: Paused: the instance is Running with Paused=True and its guest has not
    run (no boot on its console); unpause boots it, in the same instance."""
    name = "startpaused"
    path = manifest(tmp_path_factory.mktemp("startpaused"), name, NODE, "Halted")
    doc = yaml.safe_load(Path(path).read_text())
    doc["spec"]["template"]["spec"]["startStrategy"] = "Paused"
    Path(path).write_text(yaml.safe_dump(doc))
    lab.cli("apply", "-f", path)
    try:
        lab.cli("start", name, "--wait", "--timeout", "300")
        paused = wait("the Paused condition", lambda: (c := condition(vmi(lab, name), "Paused")) and
                      c["status"] == "True" and c, lab, timeout=60)
        assert paused["reason"] == "PausedByUser", paused
        assert wait("Paused printed", lambda: vm_status(lab, name) == "Paused", lab, timeout=30)
        before = vmi(lab, name)
        assert before is not None and before["status"]["phase"] == "Running"
        time.sleep(3.0)  # a guest that ran would have printed SeaBIOS's and the kernel's lines by now
        assert MARKER not in lab.cli("console", name, "--log").stdout
        lab.cli("unpause", name)
        lab.cli("console", name, "--log", "--until", MARKER, "--timeout", "180")
        after = vmi(lab, name)
        assert after is not None and after["metadata"]["uid"] == before["metadata"]["uid"]
        resumed = condition(after, "Paused")
        assert resumed is None or resumed["status"] == "False", resumed
    finally:
        lab.cli("delete", name, "--wait", "--timeout", "180", check=False)


def test_start_paused_pauses_that_start_only(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> None:
    """virtctl start --paused: this start's instance waits Paused, its guest not yet run, until
    unpause; the VM's next plain start runs at once."""
    name = "oncepaused"
    lab.cli("apply", "-f", manifest(tmp_path_factory.mktemp(name), name, NODE, "Halted"))
    try:
        lab.cli("start", name, "--paused", "--wait", "--timeout", "300")
        assert vm_status(lab, name) == "Paused"
        time.sleep(3.0)  # a guest that ran would have printed SeaBIOS's and the kernel's lines by now
        assert MARKER not in lab.cli("console", name, "--log").stdout
        lab.cli("unpause", name)
        lab.cli("console", name, "--log", "--until", MARKER, "--timeout", "180")
        lab.cli("stop", name, "--wait", "--timeout", "120")
        lab.cli("start", name, "--wait", "--timeout", "300")
        lab.cli("console", name, "--log", "--until", MARKER, "--timeout", "180")  # no unpause needed
        assert vm_status(lab, name) == "Running"
    finally:
        lab.cli("delete", name, "--wait", "--timeout", "180", check=False)
