"""Live migration with real guests (proto.migrations): ``virtbus migrate`` moves a running guest to the
other node without rebooting it; its Service address follows, its pod IP changes with its node (as a
KubeVirt masquerade guest's does), nothing of it stays on the node it left."""

from __future__ import annotations

import json
import os
import re
import signal
import time

from ctl.lab import SCHEDULERS
from servicekit import launcherlock
from tests.conftest import REPO
from tests.e2e.conftest import Lab
from tests.e2e.test_faults import wait_until
from tests.e2e.test_networking import http_get, metric, other, started
from tests.e2e.test_services import endpoint_ips, node_address

MARKER = "VIRTBUS-GUEST-READY"


def guest_says(lab: Lab, name: str, command: str, tag: str) -> str:
    """What the guest prints for a shell command, read back from its console (``tag`` marks the line)."""
    lab.cli("console", name, "--send", f"{command}; echo {tag}-$((40+2))-end\\n")
    log = lab.cli("console", name, "--log", "--until", f"{tag}-42-end", "--timeout", "60").stdout
    found = re.findall(rf"\n([^\n]*){tag}-42-end", log)
    assert found, log[-2000:]
    return str(found[-1])


def uptime(lab: Lab, name: str, tag: str) -> float:
    said = guest_says(lab, name, "read a b < /proc/uptime; echo -n U$a-", tag)
    found = re.search(r"U([0-9.]+)-", said)
    assert found, said
    return float(found[1])


def test_a_running_guest_moves_to_the_other_node_alive(lab: Lab) -> None:
    lab.cli("apply", "-f", str(REPO / "examples" / "testvm-masquerade.yaml"))
    try:
        vmi = started(lab, "testvm")
        source, uid = vmi["status"]["nodeName"], vmi["metadata"]["uid"]
        old_ip = vmi["status"]["interfaces"][0]["ipAddress"]
        lab.cli("console", "testvm", "--log", "--until", MARKER, "--timeout", "180")
        assert "hostname: testvm" in http_get(lab, other(source), f"http://{old_ip}/")
        lab.cli("expose", "vm", "testvm", "--name", "testvm-http", "--port", "8000", "--target-port", "80",
                "--type", "NodePort")
        service = lab.json("get", "services", "testvm-http")
        assert isinstance(service, dict)
        cluster_ip, node_port = service["spec"]["clusterIP"], service["spec"]["ports"][0]["nodePort"]
        assert "hostname: testvm" in http_get(lab, source, f"http://{cluster_ip}:8000/")
        guest_says(lab, "testvm", "echo kept-$((6*7)) > /tmp/mark", "wrote")
        before, at = uptime(lab, "testvm", "up1"), time.monotonic()

        began = time.monotonic()
        out = lab.cli("migrate", "testvm", "--wait", "--timeout", "180").stdout
        took = time.monotonic() - began
        print(f"\nvirtbus migrate --wait: {took:.1f}s")
        assert "VM testvm was scheduled to migrate" in out, out
        assert f"Succeeded to {other(source)}" in out, out

        moved = lab.json("get", "vmis", "testvm")
        assert isinstance(moved, dict)
        status = moved["status"]
        # the same instance, on the other node, with a pod IP of that node's
        assert (moved["metadata"]["uid"], status["phase"], status["nodeName"]) == (uid, "Running", other(source))
        new_ip = status["interfaces"][0]["ipAddress"]
        assert new_ip != old_ip
        state = status["migrationState"]
        assert (state["sourceNode"], state["targetNode"], state["completed"]) == (source, other(source), True), state
        # over TLS, by default (launcher.migrationtls): the target's launcher listened with its certificate
        target_log = (lab.state_dir / "logs" / f"launcher-{other(source)}-testvm.log").read_text()
        ready = [json.loads(line) for line in target_log.splitlines() if '"migration target ready"' in line]
        assert ready and ready[-1]["tls"] is True, ready

        # not rebooted: what it wrote in its tmpfs is there, and its uptime went on
        assert "kept-42" in guest_says(lab, "testvm", "echo -n $(cat /tmp/mark)-", "read"), "the guest lost its memory"
        after, then = uptime(lab, "testvm", "up2"), time.monotonic()
        assert after >= before + 0.5 * (then - at), f"guest uptime {before:.0f}s -> {after:.0f}s in {then - at:.0f}s"
        # reachable at its new address, from the node it left; its Service and node port follow it
        assert "hostname: testvm" in http_get(lab, source, f"http://{new_ip}/")
        wait_until("its Service's endpoint moved", lambda: endpoint_ips(lab, "testvm-http") == [new_ip], 30, lab)
        assert "hostname: testvm" in http_get(lab, source, f"http://{cluster_ip}:8000/")
        for node in ("node1", "node2"):
            assert "hostname: testvm" in http_get(lab, "outside", f"http://{node_address(lab, node)}:{node_port}/")

        # one QEMU for it, and nothing of it left on the node it left
        assert f"{lab.prefix}-{source}-testvm" not in lab.netns()
        left = lab.state_dir / "nodes" / source / "vmis" / "testvm"
        wait_until("the source's launcher gone, and its files", lambda: not left.exists(), 60, lab)

        # Prometheus's view: the leading scheduler's virt-controller figures
        assert sum(metric(lab, s, "kubevirt_vmi_migration_succeeded", 'vmi="testvm"') for s in SCHEDULERS) == 1
        listed = [line.split() for line in lab.cli("get", "vmims").stdout.splitlines()]
        assert any(row[1:5] == ["Succeeded", "testvm", source, other(source)] for row in listed), listed
        events = lab.cli("get", "events").stdout
        assert any("Migrated" in line and "vmi/testvm" in line and f"migrated to node {other(source)}" in line
                   for line in events.splitlines()), events[-2000:]

        # and back again: a moved guest moves like any other
        lab.cli("migrate", "testvm", "--wait", "--timeout", "180")
        back = lab.json("get", "vmis", "testvm")
        assert isinstance(back, dict) and back["status"]["nodeName"] == source
        assert "kept-42" in guest_says(lab, "testvm", "echo -n $(cat /tmp/mark)-", "again")
    finally:
        lab.cli("delete", "testvm", "--wait", check=False)



def test_a_drain_moves_guests_off_alive_when_the_cluster_says_live_migrate(lab: Lab) -> None:
    """KubeVirt's evictionStrategy LiveMigrate, cluster-wide in its CR: `virtbus drain` migrates the guest
    off instead of stopping it (no --delete-emptydir-data needed: what it wrote goes with it); paused, it
    moves paused, and runs again there when unpaused. The CR's migration settings (a bandwidth limit,
    auto-converge, in the clear) are what its launchers move it with."""
    def cluster(strategy: str | None) -> str:
        config: dict[str, object] = {"developerConfiguration": {"cpuAllocationRatio": 10}}
        if strategy is not None:
            config["evictionStrategy"] = strategy
            config["migrations"] = {"bandwidthPerMigration": "64Mi", "allowAutoConverge": False,
                                    "completionTimeoutPerGiB": 800, "disableTLS": True}  # the others use TLS
        path = lab.state_dir / "kubevirt-cr.json"
        path.write_text(json.dumps({"apiVersion": "kubevirt.io/v1", "kind": "KubeVirt",
                                    "metadata": {"name": "kubevirt", "namespace": "kubevirt"},
                                    "spec": {"configuration": config}}))
        return str(path)

    lab.cli("apply", "-f", cluster("LiveMigrate"))
    applied = lab.cli("apply", "-f", str(REPO / "examples" / "migration-policy.yaml")).stdout
    assert "migrationpolicy.migrations.kubevirt.io/small-vms applied" in applied, applied
    listed = lab.cli("get", "migrationpolicies").stdout
    assert "small-vms" in listed and "kubevirt.io/size=small" in listed, listed
    lab.cli("apply", "-f", str(REPO / "examples" / "testvm-masquerade.yaml"))
    node = None
    try:
        vmi = started(lab, "testvm")
        node, uid = vmi["status"]["nodeName"], vmi["metadata"]["uid"]
        lab.cli("console", "testvm", "--log", "--until", MARKER, "--timeout", "180")
        guest_says(lab, "testvm", "echo drained-$((6*7)) > /tmp/mark", "wrote")
        lab.cli("pause", "testvm", "--wait")  # a paused guest moves too, and stays paused
        out = lab.cli("drain", node, "--timeout", "180").stdout
        assert f"evicting vmi/testvm: VMI testvm is migrating off node {node}" in out, out
        assert f"node/{node} drained" in out, out
        moved = lab.json("get", "vmis", "testvm")
        assert isinstance(moved, dict)
        assert (moved["metadata"]["uid"], moved["status"]["nodeName"]) == (uid, other(node))
        # the cluster's settings, and over them the policy selecting testvm (kubevirt.io/size: small)
        state = moved["status"]["migrationState"]
        settings = state["migrationConfiguration"]
        assert (settings["bandwidthPerMigration"], settings["allowAutoConverge"], settings["completionTimeoutPerGiB"]) \
            == ("256Mi", True, 300) and state["migrationPolicyName"] == "small-vms", state
        paused = next(c for c in moved["status"]["conditions"] if c["type"] == "Paused")
        assert paused["status"] == "True", moved["status"]["conditions"]
        assert "Paused" in lab.cli("get", "vms", "testvm").stdout
        lab.cli("unpause", "testvm", "--wait")  # it runs again, on its new node
        assert "drained-42" in guest_says(lab, "testvm", "echo -n $(cat /tmp/mark)-", "after")
        assert any(row.startswith("kubevirt-evacuation-") and "Succeeded" in row
                   for row in lab.cli("get", "vmims").stdout.splitlines())
    finally:
        if node is not None:
            lab.cli("uncordon", node, check=False)
        lab.cli("delete", "testvm", "--wait", check=False)
        lab.cli("apply", "-f", cluster(None), check=False)
        lab.cli("delete", "migrationpolicy", "small-vms", check=False)


def test_a_target_killed_before_the_guest_moves_fails_the_migration_and_the_guest_runs_on(lab: Lab) -> None:
    """A fault for real: the source's launcher held (SIGSTOP) so that it cannot start moving, the target's
    launcher SIGKILLed once it is ready. The migration fails saying so; the guest runs on where it was,
    unharmed; once the source runs again it moves nothing, and a new migration moves the guest."""
    lab.cli("apply", "-f", str(REPO / "examples" / "testvm-masquerade.yaml"))
    held = None
    try:
        vmi = started(lab, "testvm")
        source, uid = vmi["status"]["nodeName"], vmi["metadata"]["uid"]
        lab.cli("console", "testvm", "--log", "--until", MARKER, "--timeout", "180")
        before, at = uptime(lab, "testvm", "f1"), time.monotonic()
        held = launcher_pid(lab, source)
        os.kill(held, signal.SIGSTOP)
        lab.cli("migrate", "testvm")
        target = other(source)
        wait_until("the target ready", lambda: migration_phase(lab) == "TargetReady", 60, lab)
        os.kill(launcher_pid(lab, target), signal.SIGKILL)
        wait_until("the migration failed", lambda: migration_phase(lab) == "Failed", 60, lab)
        os.kill(held, signal.SIGCONT)
        held = None
        state = lab.json("get", "vmis", "testvm")
        assert isinstance(state, dict)
        assert (state["metadata"]["uid"], state["status"]["phase"], state["status"]["nodeName"]) == (
            uid, "Running", source)
        failed = state["status"]["migrationState"]
        assert failed["failed"] and failed["failureReason"] == "the target's launcher killed by SIGKILL", failed
        assert any(row.split()[1:3] == ["Failed", "testvm"] for row in lab.cli("get", "vmims").stdout.splitlines())
        after, then = uptime(lab, "testvm", "f2"), time.monotonic()
        assert after >= before + 0.5 * (then - at), f"guest uptime {before:.0f}s -> {after:.0f}s in {then - at:.0f}s"
        left = lab.state_dir / "nodes" / target / "vmis" / "testvm"
        wait_until("the target's pod cleared away", lambda: not left.exists()
                   and f"{lab.prefix}-{target}-testvm" not in lab.netns(), 60, lab)
        lab.cli("migrate", "testvm", "--wait", "--timeout", "180")
        moved = lab.json("get", "vmis", "testvm")
        assert isinstance(moved, dict) and moved["status"]["nodeName"] == target
    finally:
        if held is not None:
            os.kill(held, signal.SIGCONT)
        lab.cli("delete", "testvm", "--wait", check=False)


def launcher_pid(lab: Lab, node: str) -> int:
    found = launcherlock.read_pid(lab.state_dir / "nodes" / node / "vmis" / "testvm")
    assert found is not None, f"no launcher of testvm on {node}"
    return found[0]


def migration_phase(lab: Lab) -> str | None:
    vmi = lab.json("get", "vmis", "testvm")
    state = vmi.get("status", {}).get("migrationState") if isinstance(vmi, dict) else None
    return str(state["phase"]) if isinstance(state, dict) and "phase" in state else None


def test_a_guest_on_a_secondary_network_keeps_its_address_there_as_it_moves(lab: Lab) -> None:
    """The seed's testvm-2: pod network plus a bridge NIC on multus-br. Migrated, it keeps its MAC and
    its multus-br address, and the outside host reaches it there on the other node."""
    lab.cli("apply", "-f", str(REPO / "examples" / "multus-br.yaml"))
    lab.cli("apply", "-f", str(REPO / "examples" / "testvm-2-secondary.yaml"))
    try:
        vmi = started(lab, "testvm-2")
        ext = next(i for i in vmi["status"]["interfaces"] if i["name"] == "ext-net")
        for lease in (ext["ipAddress"], "10.0.2.2"):
            lab.cli("console", "testvm-2", "--log", "--until", f"VIRTBUS-GUEST-IP {lease}", "--timeout", "120")
        assert "hostname: testvm-2" in http_get(lab, "outside", f"http://{ext['ipAddress']}/")
        lab.cli("migrate", "testvm-2", "--wait", "--timeout", "180")
        moved = lab.json("get", "vmis", "testvm-2")
        assert isinstance(moved, dict) and moved["status"]["nodeName"] == other(vmi["status"]["nodeName"])
        after = next(i for i in moved["status"]["interfaces"] if i["name"] == "ext-net")
        assert (after["ipAddress"], after["mac"]) == (ext["ipAddress"], ext["mac"])
        assert "hostname: testvm-2" in http_get(lab, "outside", f"http://{ext['ipAddress']}/")
    finally:
        lab.cli("delete", "testvm-2", "--wait", check=False)

