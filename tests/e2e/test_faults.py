"""Process faults kill nothing: with a VM running, SIGKILL the scheduler, freeze its handler for 2
minutes, freeze nats-server for 1, restart nats-server; after each the same QEMU runs, the guest's
uptime goes on, its VMI is Running again (Unknown meanwhile, never Failed), and every component picks
up where it was (a start asked for during the outage is carried out, heartbeats move again, a stop
afterwards reaches the old launcher).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import nats
import pytest

from ctl.lab import SCHEDULERS
from proto import subjects
from proto.state import Lease
from scheduler.nodelife import Thresholds
from servicekit.store import Store
from tests.e2e.conftest import Lab
from tests.e2e.test_networking import started, write_manifest
from tests.e2e.test_walking_skeleton import pids_in

pytestmark = pytest.mark.e2e
NODE_LOST_AFTER_S = Thresholds.lost_after  # the scheduler's default
HANDLER_FREEZE_S = 120.0
NATS_FREEZE_S = 60.0
MARKER = "VIRTBUS-GUEST-READY"


class Guest:
    """The running VM under test: its QEMU process and its uptime, read over its serial console."""

    def __init__(self, lab: Lab, name: str) -> None:
        self.lab = lab
        self.name = name
        vmi = started(lab, name)
        self.uid = vmi["metadata"]["uid"]
        self.node = vmi["status"]["nodeName"]
        lab.cli("console", name, "--log", "--until", MARKER, "--timeout", "180")
        self.qemu = self.qemu_pid()
        self.reads = 0
        self.last = self.uptime()

    def qemu_pid(self) -> int:
        # the guest's QEMU, not one libvirtd may be running at the moment to probe QEMU's capabilities
        pids = [p for p in pids_in(f"{self.lab.prefix}-{self.node}-{self.name}")
                if Path(f"/proc/{p}/comm").read_text().startswith("qemu")
                and f"guest={self.name}," in Path(f"/proc/{p}/cmdline").read_text().replace("\0", " ")]
        assert len(pids) == 1, f"QEMU processes in the pod: {pids}"
        return pids[0]

    def uptime(self) -> tuple[float, float]:
        """(the guest's uptime, our monotonic clock) at one reading."""
        self.reads += 1
        tag = f"up{self.reads}"
        # the arithmetic makes what the guest prints differ from the line typed (echoed back)
        self.lab.cli("console", self.name, "--send", f"read a b < /proc/uptime; echo U$((1+1))X-$a-{tag}-E$((2+3))\\n")
        log = self.lab.cli("console", self.name, "--log", "--until", f"{tag}-E5", "--timeout", "60").stdout
        found = re.search(rf"U2X-([0-9.]+)-{tag}-E5", log)
        assert found, log[-2000:]
        return float(found[1]), time.monotonic()

    def check_unharmed(self, what: str) -> None:
        """Same instance Running, same QEMU, and an uptime that went on through the fault."""
        vmi = self.lab.json("get", "vmis", self.name)
        assert isinstance(vmi, dict)
        assert (vmi["metadata"]["uid"], vmi["status"]["phase"]) == (self.uid, "Running"), (what, vmi["status"])
        assert self.qemu_pid() == self.qemu, f"{what}: another QEMU runs the guest"
        os.kill(self.qemu, 0)
        (before, at), (now, then) = self.last, self.uptime()
        # a reboot would start again near 0; a paused or restarted guest would fall far behind
        assert now - before >= 0.5 * (then - at), \
            f"{what}: guest uptime {before:.0f}s -> {now:.0f}s in {then - at:.0f}s"
        self.last = (now, then)


def wait_until(what: str, check: Callable[[], bool], limit: float, lab: Lab) -> float:
    began = time.monotonic()
    while not check():
        assert time.monotonic() - began < limit, f"{what}: not within {limit:.0f}s\n{lab.logs()}"
        time.sleep(0.5)
    return time.monotonic() - began


def phase(lab: Lab, name: str) -> str | None:
    """The VMI's phase as the API says it in plain JSON over NATS, None without an answer. Not the CLI:
    the waits below ask twice a second for minutes, and a CLI process costs ~0.6 CPU-s here, most
    of a core on this 2-core box while the suite runs beside this test."""
    async def ask() -> str | None:
        nc = await nats.connect(lab.url, nkeys_seed=lab.creds, allow_reconnect=False, connect_timeout=2)
        try:
            reply = json.loads((await nc.request(subjects.api("vmi", "get"),
                                                 json.dumps({"name": name}).encode(), timeout=5)).data)
        finally:
            await nc.close()
        item = reply.get("item")
        return str(item["phase"]) if isinstance(item, dict) else None
    try:
        return asyncio.run(ask())
    except (OSError, nats.errors.Error):
        return None  # the bus frozen or away: no answer, as the CLI's would fail


def lease_holder(lab: Lab) -> str | None:
    async def read() -> str | None:
        store = await Store.connect(lab.url, "test-faults", creds=lab.creds)
        try:
            entry = await (await store.control_bucket(subjects.BUCKET_LEADER, Lease)).get(subjects.LEASE_CONTROLLERS)
            return entry.value.holder if entry is not None else None
        finally:
            await store.close()
    return asyncio.run(read())


def pid_of(lab: Lab, name: str) -> int:
    return int((lab.state_dir / "pids" / f"{name}.pid").read_text())


def nodes_ready(lab: Lab) -> bool:
    done = lab.cli("get", "nodes", "-o", "json", check=False)
    if done.returncode != 0:
        return False
    items = json.loads(done.stdout)["items"]
    return sorted(c["status"] for n in items for c in n["status"]["conditions"] if c["type"] == "Ready") == \
        ["True", "True"]


def heartbeats(lab: Lab) -> list[str]:
    nodes = lab.json("get", "nodes")
    assert isinstance(nodes, dict)
    return [c["lastHeartbeatTime"] for n in nodes["items"] for c in n["status"]["conditions"] if c["type"] == "Ready"]


def assert_nodes_ready(lab: Lab) -> None:
    assert nodes_ready(lab), lab.cli("get", "nodes").stdout


@pytest.fixture
def guest(lab: Lab) -> Iterator[Guest]:
    lab.cli("apply", "-f", write_manifest(lab, "steady", "masquerade"))
    lab.cli("apply", "-f", write_manifest(lab, "later", "masquerade"))
    try:
        yield Guest(lab, "steady")
    finally:
        for name in ("steady", "later"):
            lab.cli("delete", name, "--wait", "--timeout", "120", check=False)


def test_process_faults_kill_nothing(lab: Lab, guest: Guest) -> None:
    # (a) the leading scheduler SIGKILLed: the lab's other one takes the lease over, and binds
    def leader() -> str | None:
        holder = lease_holder(lab) or ""
        return next((name for name in SCHEDULERS if holder.startswith(f"scheduler-{pid_of(lab, name)}-")), None)

    wait_until("a scheduler leads", lambda: leader() is not None, 30, lab)
    was = leader()
    assert was is not None
    os.kill(pid_of(lab, was), signal.SIGKILL)
    took = wait_until("the other scheduler leads", lambda: leader() not in (None, was), 60, lab)
    print(f"leading scheduler SIGKILL -> the other one leads: {took:.1f}s")
    assert took < 5.0, f"the standby took {took:.1f}s to lead"
    lab.cli("apply", "-f", write_manifest(lab, "newleader", "masquerade"))
    began = time.monotonic()
    lab.cli("start", "newleader", "--wait", "--timeout", "300")
    print(f"  ...and a VM started under the new leader: {time.monotonic() - began:.1f}s")
    lab.cli("delete", "newleader", "--wait", "--timeout", "120")
    guest.check_unharmed("scheduler killed")

    # (b) the VM's handler frozen longer than the node-lost threshold: Unknown, never Failed, and back
    handler = pid_of(lab, f"handler-{guest.node}")
    os.kill(handler, signal.SIGSTOP)
    try:
        frozen = time.monotonic()
        seen: set[str | None] = set()

        def unknown() -> bool:
            seen.add(phase(lab, guest.name))
            return "Unknown" in seen
        went = wait_until("the VMI goes Unknown", unknown, HANDLER_FREEZE_S, lab)
        print(f"handler frozen -> VMI Unknown: {went:.1f}s (threshold {NODE_LOST_AFTER_S:.0f}s)")
        time.sleep(max(HANDLER_FREEZE_S - (time.monotonic() - frozen), 0))
        seen.add(phase(lab, guest.name))
        assert seen <= {"Running", "Unknown"}, seen
    finally:
        os.kill(handler, signal.SIGCONT)
    back = wait_until("the VMI is Running again", lambda: phase(lab, guest.name) == "Running", 30, lab)
    print(f"handler thawed after {HANDLER_FREEZE_S:.0f}s -> VMI Running again: {back:.1f}s")
    guest.check_unharmed("handler frozen")

    # (c) nats-server frozen for a minute; a start asked for meanwhile is carried out after it
    async def outage() -> dict[str, object]:
        nc = await nats.connect(lab.url, nkeys_seed=lab.creds)  # connected before: the request waits in it
        server = pid_of(lab, "nats-server")
        os.kill(server, signal.SIGSTOP)
        try:
            await asyncio.sleep(NATS_FREEZE_S / 3)
            asked = asyncio.create_task(nc.request(subjects.api("vm", "start"), b'{"name": "later"}',
                                                   timeout=NATS_FREEZE_S + 60))
            await asyncio.sleep(NATS_FREEZE_S * 2 / 3)
        finally:
            os.kill(server, signal.SIGCONT)
        try:
            reply: dict[str, object] = json.loads((await asked).data)
            return reply
        finally:
            await nc.close()

    reply = asyncio.run(outage())
    assert "error" not in reply, reply
    thawed = time.monotonic()
    wait_until("the start asked for during the outage", lambda: phase(lab, "later") == "Running", 180, lab)
    print(f"nats-server thawed -> the VM started during the outage Running: {time.monotonic() - thawed:.1f}s")
    guest.check_unharmed("nats-server frozen")
    assert_nodes_ready(lab)

    # (d) nats-server ended (SIGTERM) and started again by the lab's supervisor: every client
    # reconnects to it, and its file storage kept the state
    server = pid_of(lab, "nats-server")
    os.kill(server, signal.SIGTERM)
    wait_until("nats-server back", lambda: pid_of(lab, "nats-server") != server
               and lab.cli("get", "nodes", check=False).returncode == 0, 60, lab)
    restarted, before = time.monotonic(), heartbeats(lab)
    # each handler writes its heartbeat again (Ready alone would show silence counted afresh)
    wait_until("every handler heartbeats again", lambda: all(
        new != old for new, old in zip(heartbeats(lab), before, strict=True)) and nodes_ready(lab), 60, lab)
    print(f"nats-server restarted -> every handler heartbeats, Ready: {time.monotonic() - restarted:.1f}s")
    guest.check_unharmed("nats-server restarted")
    # the launcher that lived through it all still hears its VMI: a stop reaches the guest
    lab.cli("stop", guest.name, "--wait", "--timeout", "120")
    assert "Power down" in lab.cli("console", guest.name, "--log", "--until", "Power down", "--timeout", "30").stdout
    lab.cli("stop", "later", "--wait", "--timeout", "120")
    terms = [line for name in SCHEDULERS for line in (lab.state_dir / "logs" / f"{name}.log").read_text().splitlines()
             if "leading" in line or "afresh" in line]
    print("the scheduler's terms:\n" + "\n".join(terms))
