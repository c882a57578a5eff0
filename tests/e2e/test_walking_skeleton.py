"""The seed testvm, as a new user runs it: import, apply, start, console, stop, delete."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import nats
import nats.errors
import pytest

from tests.conftest import EXAMPLES
from tests.e2e.conftest import Lab, guest_disk

pytestmark = pytest.mark.e2e
MARKER = "VIRTBUS-GUEST-READY"


def pids_in(netns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True, check=False).stdout
    return [int(p) for p in out.split()]


def test_two_nodes_are_ready(lab: Lab) -> None:
    nodes = lab.json("get", "nodes")
    assert isinstance(nodes, dict) and nodes["kind"] == "List"
    ready = sorted((n["metadata"]["name"], c["status"]) for n in nodes["items"]
                   for c in n["status"]["conditions"] if c["type"] == "Ready")
    assert ready == [("node1", "True"), ("node2", "True")]
    assert lab.netns() == lab.infra_netns()


def first_logged(logs: list[Path], event: str, **fields: str) -> datetime.datetime:
    """When the first of these JSON log lines with this event (and these fields) was written."""
    times = []
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            if f'"{event}"' not in line:
                continue
            entry = json.loads(line)
            if entry.get("event") == event and all(entry.get(k) == v for k, v in fields.items()):
                times.append(datetime.datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")))
                break
    assert times, f"no {event!r} {fields} in {[log.name for log in logs]}"
    return min(times)


def test_a_node_is_registered_once_its_qemu_is_probed(lab: Lab) -> None:
    """A node is Ready, and so chosen for VMs, only once it has read QEMU's capabilities (as KubeVirt's
    node labeller must before a node is schedulable): its first launches then find them cached."""
    logs = lab.state_dir / "logs"
    for node in ("node1", "node2"):
        cached = first_logged([logs / f"warmcaps-{node}.log"], "QEMU capabilities cached")
        registered = first_logged(sorted(logs.glob("scheduler*.log")), "node registered", node=node)
        assert cached <= registered, f"{node} registered at {registered}, its capabilities cached at {cached}"


def test_services_answer_micro_discovery(lab: Lab) -> None:
    """What `nats micro list` shows: the api service, the node API and one agent per node."""
    async def ping() -> list[str]:
        nc = await nats.connect(lab.url, nkeys_seed=lab.creds)
        try:
            inbox = nc.new_inbox()
            sub = await nc.subscribe(inbox)
            await nc.publish("$SRV.PING", b"", reply=inbox)
            names = []
            with contextlib.suppress(nats.errors.TimeoutError):
                while True:
                    names.append(json.loads((await sub.next_msg(timeout=1)).data)["name"])
            return sorted(names)
        finally:
            await nc.close()

    # the lab's two schedulers both serve the API and the node API (queue groups); one agent per node
    assert asyncio.run(ping()) == ["virtbus-api", "virtbus-api", "virtbus-handler", "virtbus-handler",
                                   "virtbus-nodeapi", "virtbus-nodeapi"]


def test_seed_testvm_lifecycle(lab: Lab) -> None:
    lab.cli("image", "import", "quay.io/kubevirt/cirros-container-disk-demo", "--file", guest_disk())
    assert "quay.io/kubevirt/cirros-container-disk-demo" in lab.cli("image", "list").stdout

    applied = lab.cli("apply", "-f", str(EXAMPLES / "testvm-masquerade.yaml"))
    assert "virtualmachine/testvm applied (Stopped)" in applied.stdout
    before = lab.json("get", "vms", "testvm")
    lab.cli("apply", "-f", str(EXAMPLES / "testvm-masquerade.yaml"))  # the same again changes nothing
    after = lab.json("get", "vms", "testvm")
    assert isinstance(before, dict) and isinstance(after, dict)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["status"]["printableStatus"] == "Stopped"
    assert lab.cli("get", "vms").stdout.splitlines()[1].split()[2] == "Stopped"

    started = time.monotonic()
    out = lab.cli("start", "testvm", "--wait", "--timeout", "300")
    assert "Running" in out.stdout, out.stdout
    vmi = lab.json("get", "vmis", "testvm")
    assert isinstance(vmi, dict)
    assert vmi["status"]["phase"] == "Running" and vmi["status"]["nodeName"] in ("node1", "node2"), vmi
    pod = f"{lab.prefix}-{vmi['status']['nodeName']}-testvm"
    assert pod in lab.netns()
    assert pids_in(pod), "no libvirtd/QEMU in the VM's pod namespace"

    console = lab.cli("console", "testvm", "--log", "--until", MARKER, "--timeout", "180")
    assert MARKER in console.stdout
    print(f"start -> marker: {time.monotonic() - started:.1f}s")

    # The lab's viewer reads what admin sees and is refused, at once and plainly, whatever changes
    viewer = lab.creds_of("viewer")
    assert "Running" in lab.cli("--creds", viewer, "get", "vms").stdout
    assert MARKER in lab.cli("--creds", viewer, "console", "testvm", "--log").stdout
    for verb in (("stop", "testvm"), ("delete", "testvm"), ("console", "testvm", "--send", "reboot\\n")):
        t0 = time.monotonic()
        refused = lab.cli("--creds", viewer, *verb, check=False)
        assert refused.returncode == 1 and "Forbidden" in refused.stderr, refused.stderr
        assert time.monotonic() - t0 < 8, "a refused verb waited out the 10 s timeout"
    assert lab.json("get", "vmis", "testvm")["status"]["phase"] == "Running"  # type: ignore[index]

    # The serial console over NATS: type into the guest's shell, read its answer.
    lab.cli("console", "testvm", "--send", "echo hi-$((40+2))\\n")
    assert "hi-42" in lab.cli("console", "testvm", "--log", "--until", "hi-42", "--timeout", "30").stdout

    # Starting a running VM is not an error (the lab command is idempotent).
    assert "already running" in lab.cli("start", "testvm").stdout

    lab.cli("stop", "testvm", "--wait", "--timeout", "120")
    assert lab.cli("get", "vms", "testvm").stdout.splitlines()[1].split()[2] == "Stopped"
    assert lab.cli("get", "vmis", "testvm", check=False).returncode == 1
    # The guest powered off by itself on the ACPI button: its kernel said so on the console.
    assert "Power down" in lab.cli("console", "testvm", "--log").stdout
    assert pod not in lab.netns()
    assert not (lab.state_dir / "nodes" / vmi["status"]["nodeName"] / "vmis" / "testvm").exists()

    lab.cli("delete", "testvm", "--wait", "--timeout", "120")
    # the VM's life as events, in order (kept in a stream, like kubectl get events)
    events = [line.split()[2] for line in lab.cli("get", "events").stdout.splitlines()[1:] if "/testvm " in line]
    life = ["SuccessfulCreate", "Scheduled", "Started", "Stopped", "SuccessfulDelete"]
    assert [e for e in events if e in life] == life, events
    missing = lab.cli("get", "vms", "testvm", check=False)
    assert missing.returncode == 1 and "NotFound" in missing.stderr
    assert lab.netns() == lab.infra_netns()
    for node in ("node1", "node2"):
        vmis_dir = lab.state_dir / "nodes" / node / "vmis"
        assert not vmis_dir.exists() or list(vmis_dir.iterdir()) == []


def test_restart_and_a_handler_restart_keep_the_vm(lab: Lab) -> None:
    """A launcher outlives its handler; the new handler adopts it. restart gives a new instance."""
    lab.cli("apply", "-f", str(EXAMPLES / "testvm-masquerade.yaml"))
    lab.cli("start", "testvm", "--wait", "--timeout", "300")
    first = lab.json("get", "vmis", "testvm")
    assert isinstance(first, dict)
    node = first["status"]["nodeName"]
    pidfile = lab.state_dir / "nodes" / node / "vmis" / "testvm" / "launcher.pid"
    launcher_pid = int(pidfile.read_text().split()[0])
    handler_pid = int((lab.state_dir / "pids" / f"handler-{node}.pid").read_text())
    os.kill(handler_pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the lab's supervisor brings the handler back
        new_pid = int((lab.state_dir / "pids" / f"handler-{node}.pid").read_text())
        log = (lab.state_dir / "logs" / f"handler-{node}.log").read_text()
        if new_pid != handler_pid and "adopted launcher" in log:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"handler did not come back and adopt:\n{lab.logs()}")
    time.sleep(3)  # a few reconciles of the new handler
    again = lab.json("get", "vmis", "testvm")
    assert isinstance(again, dict) and again["status"]["phase"] == "Running"
    assert again["metadata"]["uid"] == first["metadata"]["uid"]
    os.kill(launcher_pid, 0)  # the same launcher still runs

    # the VM changed while it runs: its instance keeps the spec it started with, and KubeVirt's
    # RestartRequired condition says so until a restart brings the change
    bigger = lab.state_dir / "testvm-bigger.yaml"
    bigger.write_text((EXAMPLES / "testvm-masquerade.yaml").read_text().replace("memory: 64M", "memory: 96M")
                      .replace("running: false", "running: true"))  # as it runs now: not stopped by the apply
    assert "restart it to apply the change" in lab.cli("apply", "-f", str(bigger)).stdout
    conditions = lab.json("get", "vm", "testvm")["status"]["conditions"]  # type: ignore[index]
    assert [c["type"] for c in conditions] == ["RestartRequired"], conditions
    described = lab.cli("describe", "vm", "testvm").stdout
    assert "RestartRequired" in described and "a non-live-updatable field was changed" in described, described

    lab.cli("restart", "testvm", "--wait", "--timeout", "300")
    restarted = lab.json("get", "vmis", "testvm")
    assert isinstance(restarted, dict) and restarted["status"]["phase"] == "Running"
    assert restarted["metadata"]["uid"] != first["metadata"]["uid"]
    assert restarted["spec"]["domain"]["resources"]["requests"]["memory"] == "96M", restarted["spec"]["domain"]
    assert "conditions" not in lab.json("get", "vm", "testvm")["status"]  # type: ignore[index]

    # virtctl stop --force --grace-period 0: the guest is not asked, its QEMU ends at once (a guest
    # that hangs need not be waited out for its 30 s)
    began = time.monotonic()
    forced = lab.cli("stop", "testvm", "--force", "--grace-period", "0", "--wait", "--timeout", "120").stdout
    print(f"\nforced stop -> Stopped: {time.monotonic() - began:.1f}s")
    assert "forced: its guest has 0s" in forced, forced
    events = lab.cli("get", "events").stdout.splitlines()
    stopped = [line for line in events if " Stopped " in line and "testvm" in line]
    assert "destroyed after 0s grace" in stopped[-1], stopped  # the guest never heard the button
    lab.cli("start", "testvm", "--wait", "--timeout", "300")
    assert MARKER in lab.cli("console", "testvm", "--log", "--until", MARKER, "--timeout", "120").stdout

    lab.cli("delete", "testvm", "--wait", "--timeout", "120")
    assert lab.netns() == lab.infra_netns()
