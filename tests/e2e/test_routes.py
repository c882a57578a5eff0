"""Routes and Ingresses for real: a VM behind a Service, a Route and an Ingress by host name to it, reached
from the outside host through either node's HAProxy; an unknown host gets 404; a guest cannot open
its node's port 80; a handler SIGKILLed leaves its HAProxy serving, and the next one adopts it; and a
deleted Route is gone from every node."""

from __future__ import annotations

import json
import os
import signal
import statistics
import time

import pytest

from tests.e2e.conftest import Lab
from tests.e2e.test_networking import lab_exec, started
from tests.e2e.test_services import MARKER, node_address, web_manifest

pytestmark = pytest.mark.e2e
HOST = "node-vm.apps.example"
INGRESS_HOST = "node-vm-ingress.apps.example"


def status_and_body(lab: Lab, address: str, host: str) -> tuple[int, str]:
    done = lab_exec(lab, "outside", "curl", "-s", "-m", "5", "-H", f"Host: {host}", "-w", "\n%{http_code}",
                    f"http://{address}/")
    body, _, code = done.stdout.rpartition("\n")
    return (int(code) if code.isdigit() else 0), body


def routed(lab: Lab, address: str, host: str, code: int = 200) -> str:
    """What the node's proxy answers for host, once it answers with code (its config follows the
    buckets within a moment; the guest's web server may still be starting)."""
    deadline = time.monotonic() + 60
    while True:
        got, body = status_and_body(lab, address, host)
        if got == code:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"{host} via {address}: {got} {body!r}\n{lab.logs()}")
        time.sleep(0.5)


def write(lab: Lab, name: str, manifest: dict[str, object]) -> str:
    path = lab.state_dir / f"{name}.json"
    path.write_text(json.dumps(manifest))
    return str(path)


def test_a_route_and_an_ingress_reach_the_vm_by_name_through_either_node(lab: Lab) -> None:
    lab.cli("apply", "-f", web_manifest(lab, "node-vm", "node1", {"kubevirt.io/domain": "node-vm"}))
    started(lab, "node-vm")
    lab.cli("expose", "vm", "node-vm", "--name", "web", "--port", "80")
    lab.cli("apply", "-f", write(lab, "route", {
        "apiVersion": "route.openshift.io/v1", "kind": "Route", "metadata": {"name": "node-vm"},
        "spec": {"host": HOST, "to": {"kind": "Service", "name": "web"}, "port": {"targetPort": 80}}}))
    addresses = {node: node_address(lab, node) for node in ("node1", "node2")}
    for address in addresses.values():  # the VM runs on node1; node2's proxy leads across the node network
        assert "hostname: node-vm" in routed(lab, address, HOST)
    assert routed(lab, addresses["node2"], "nobody.apps.example", 404) == "no route for this host and path"
    # a second Route for the same host: the first keeps it, as OpenShift's router admits the oldest
    lab.cli("apply", "-f", write(lab, "route2", {
        "apiVersion": "route.openshift.io/v1", "kind": "Route", "metadata": {"name": "late"},
        "spec": {"host": HOST, "to": {"kind": "Service", "name": "nothing"}}}))
    listed = lab.cli("get", "routes").stdout
    assert "HOST/PORT" in listed and HOST in listed and "web" in listed
    assert any(line.split()[:2] == ["late", "HostAlreadyClaimed"] for line in listed.splitlines()), listed
    assert "hostname: node-vm" in routed(lab, addresses["node2"], HOST)
    lab.cli("delete", "route", "late")

    # the request's time through the proxy, from the outside host (curl's total, median of 20)
    for node, address in addresses.items():
        loop = (f"for i in $(seq 20); do curl -s -o /dev/null -w '%{{time_total}}\\n' -H 'Host: {HOST}' "
                f"http://{address}/; done")
        times = [float(t) for t in lab_exec(lab, "outside", "sh", "-c", loop).stdout.split()]
        assert len(times) == 20
        print(f"through {node}'s HAProxy to the VM on node1: median {statistics.median(times) * 1000:.1f} ms, "
              f"max {max(times) * 1000:.1f} ms (20 requests)")

    lab.cli("apply", "-f", write(lab, "ingress", {
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "node-vm"},
        "spec": {"rules": [{"host": INGRESS_HOST, "http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}))
    for address in addresses.values():
        assert "hostname: node-vm" in routed(lab, address, INGRESS_HOST)
    assert INGRESS_HOST in lab.cli("get", "ingresses").stdout

    # node2's handler SIGKILLed: its HAProxy serves on, and the handler the lab starts again adopts it
    master = int((lab.state_dir / "nodes" / "node2" / "router" / "haproxy.pid").read_text().split()[0])
    handler_pid = lab.state_dir / "pids" / "handler-node2.pid"
    os.kill(int(handler_pid.read_text()), signal.SIGKILL)
    assert "hostname: node-vm" in routed(lab, addresses["node2"], HOST)
    log = lab.state_dir / "logs" / "handler-node2.log"
    deadline = time.monotonic() + 60
    while "adopted the HTTP proxy" not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, lab.logs()
        time.sleep(0.5)

    # the guest itself cannot open its node's (nor the other node's) port 80: the fence holds
    lab.cli("console", "node-vm", "--log", "--until", MARKER, "--timeout", "180")
    # both at once (each waits out its 4 s), then one line after them
    probe = " ".join(f"(timeout 4 wget -q -O /dev/null http://{a}/ && echo OPENED-$((6*7))) &"
                     for a in addresses.values())
    lab.cli("console", "node-vm", "--send", f"{probe} wait; echo TRIED-$((6*7))\\n")
    said = lab.cli("console", "node-vm", "--log", "--until", "TRIED-42", "--timeout", "60").stdout
    said = said.rsplit("TRIED-$((6*7))", 1)[-1]  # what came after the typed line (the shell's job notices too)
    assert "TRIED-42" in said and "OPENED-42" not in said, said

    lab.cli("delete", "route", "node-vm")
    lab.cli("delete", "ingress", "node-vm")
    for address in addresses.values():  # node2's by the HAProxy it adopted, reloaded
        routed(lab, address, HOST, 404)
        routed(lab, address, INGRESS_HOST, 404)
    assert int((lab.state_dir / "nodes" / "node2" / "router" / "haproxy.pid").read_text().split()[0]) == master
    lab.cli("delete", "node-vm", "--wait", "--timeout", "120")
    lab.cli("delete", "service", "web")
