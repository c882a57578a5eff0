"""Reaching guests: masquerade and bridge bindings on the pod network, across nodes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from typing import Any

import pytest

from tests.conftest import EXAMPLES, REPO
from tests.e2e.conftest import Lab, guest_disk

pytestmark = pytest.mark.e2e


def lab_exec(lab: Lab, node: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ctl", "lab", "exec", "--state-dir", str(lab.state_dir), node,
                           "--", *cmd], capture_output=True, text=True, timeout=60, cwd=REPO)


def http_get(lab: Lab, node: str, url: str) -> str:
    """From inside a node's namespace, retrying while the guest's service comes up."""
    deadline = time.monotonic() + 60
    while True:
        done = lab_exec(lab, node, "curl", "-s", "-m", "3", url)
        if done.returncode == 0 and done.stdout:
            return done.stdout
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} from {node}: {done.returncode} {done.stderr}\n{lab.logs()}")
        time.sleep(0.5)


def metric(lab: Lab, node: object, name: str, labels: str) -> float:
    """A sample from the node's /metrics, 0 when absent; labels: a substring of its label set."""
    port = json.loads((lab.state_dir / "lab.json").read_text())["metrics"][node]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.startswith(name + "{") and all(part in line for part in labels.split(",")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def started(lab: Lab, name: str) -> dict[str, Any]:
    """The VirtualMachineInstance (``get vmis NAME -o json``), once its VM is Running."""
    lab.cli("start", name, "--wait", "--timeout", "300")
    vmi = lab.json("get", "vmis", name)
    assert isinstance(vmi, dict) and vmi["kind"] == "VirtualMachineInstance"
    return vmi


def other(node: object) -> str:
    return "node2" if node == "node1" else "node1"


def test_masquerade_guest_gets_10_0_2_2_and_serves_on_its_pod_ip(lab: Lab) -> None:
    lab.cli("image", "import", "quay.io/kubevirt/cirros-container-disk-demo", "--file", guest_disk())
    lab.cli("apply", "-f", str(EXAMPLES / "testvm-masquerade.yaml"))
    vmi = started(lab, "testvm")
    console = lab.cli("console", "testvm", "--log", "--until", "VIRTBUS-GUEST-IP", "--timeout", "120").stdout
    assert "VIRTBUS-GUEST-IP 10.0.2.2" in console  # the guest's own view of its address
    iface = vmi["status"]["interfaces"][0]
    pod_ip = iface["ipAddress"]
    assert pod_ip.startswith("10.244.") and iface["ipAddresses"] == [pod_ip] and iface["mac"].startswith("02:")
    sent_before = metric(lab, vmi["status"]["nodeName"], "kubevirt_vmi_network_transmit_bytes_total",
                         'interface="default",name="testvm"')
    page = http_get(lab, other(vmi["status"]["nodeName"]), f"http://{pod_ip}/")  # from another node's namespace
    assert "virtbus test guest, hostname: testvm" in page
    # the node's /metrics (KubeVirt's names): the guest's transmit counter grew by at least the page
    deadline = time.monotonic() + 20
    while metric(lab, vmi["status"]["nodeName"], "kubevirt_vmi_network_transmit_bytes_total",
                 'interface="default",name="testvm"') < sent_before + len(page):
        assert time.monotonic() < deadline, "the transmit counter did not grow"
        time.sleep(1)
    assert metric(lab, vmi["status"]["nodeName"], "kubevirt_vmi_vcpu_seconds_total", 'id="0",name="testvm"') > 0

    # two VMs on two nodes talk by pod IP: the guest of testvm fetches the page of a second VM
    lab.cli("apply", "-f", write_manifest(lab, "peer", "masquerade"))
    peer = started(lab, "peer")
    assert peer["status"]["nodeName"] != vmi["status"]["nodeName"]  # least-allocated spreads them
    peer_ip = peer["status"]["interfaces"][0]["ipAddress"]
    lab.cli("console", "peer", "--log", "--until", "VIRTBUS-GUEST-IP", "--timeout", "120")
    request = f"printf 'GET / HTTP/1.0\\\\r\\\\n\\\\r\\\\n' | nc {peer_ip} 80 | grep -o 'hostname: p[a-z]*'\\n"
    lab.cli("console", "testvm", "--send", request)
    assert "hostname: peer" in lab.cli("console", "testvm", "--log", "--until", "hostname: peer",
                                       "--timeout", "60").stdout
    lab.cli("delete", "peer", "--wait", "--timeout", "120")

    # a node port, reached from outside the VM's node; gone once removed
    out = lab.cli("expose", "vm", "testvm", "--port", "80").stdout
    node_port = int(out.split("node port ")[1].split()[0])
    nodes = lab.json("get", "nodes")
    assert isinstance(nodes, dict)
    address = next(a["address"] for n in nodes["items"] if n["metadata"]["name"] == vmi["status"]["nodeName"]
                   for a in n["status"]["addresses"] if a["type"] == "InternalIP")
    assert "hostname: testvm" in http_get(lab, other(vmi["status"]["nodeName"]), f"http://{address}:{node_port}/")
    assert "hostname: testvm" in http_get(lab, "outside", f"http://{address}:{node_port}/")  # off the cluster
    # hairpin: the guest reaches its own pod IP and its own node port
    for marker, target in (("HAIRPIN-POD", f"{pod_ip} 80"), ("HAIRPIN-NODEPORT", f"{address} {node_port}")):
        lab.cli("console", "testvm", "--send", f"printf 'GET / HTTP/1.0\\\\r\\\\n\\\\r\\\\n' | nc -w 5 {target} "
                f"| grep -o 'hostname: t[a-z]*' | sed 's/^/{marker} /'\\n")
        assert f"{marker} hostname: testvm" in lab.cli("console", "testvm", "--log", "--until",
                                                       f"{marker} hostname: testvm", "--timeout", "60").stdout
    again = lab.cli("expose", "vm", "testvm", "--port", "8080", "--node-port", str(node_port), check=False)
    assert again.returncode == 1 and "already exposed" in again.stderr
    lab.cli("unexpose", "vm", "testvm", "--port", "80")
    deadline = time.monotonic() + 10
    url = f"http://{address}:{node_port}/"
    while lab_exec(lab, other(vmi["status"]["nodeName"]), "curl", "-s", "-m", "2", url).returncode == 0:
        assert time.monotonic() < deadline, "the node port still answers after unexpose"
        time.sleep(0.5)

    # the address belongs to the VM: the same after stop and start
    lab.cli("stop", "testvm", "--wait", "--timeout", "120")
    rerun = started(lab, "testvm")
    if rerun["status"]["nodeName"] == vmi["status"]["nodeName"]:
        assert rerun["status"]["interfaces"][0]["ipAddress"] == pod_ip
    # its guest booted again and got its lease (booted, it heeds the delete's power button at once; a
    # guest still booting would be waited for its 30 s grace)
    lab.cli("console", "testvm", "--log", "--until", "VIRTBUS-GUEST-IP 10.0.2.2", "--timeout", "120")
    lab.cli("delete", "testvm", "--wait", "--timeout", "120")


def write_manifest(lab: Lab, name: str, binding: str, node: str | None = None, running: bool = False) -> str:
    """A one-NIC VM on the pod network; node: pinned there as KubeVirt users pin (kubernetes.io/hostname)."""
    selector = {"nodeSelector": {"kubernetes.io/hostname": node}} if node else {}
    manifest = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": name},
                "spec": {"running": running, "template": {"spec": {
                    **selector,
                    "domain": {"resources": {"requests": {"memory": "64M"}},
                               "devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}}],
                                           "interfaces": [{"name": "default", binding: {}}]}},
                    "networks": [{"name": "default", "pod": {}}],
                    "volumes": [{"name": "root", "containerDisk": {
                        "image": "quay.io/kubevirt/cirros-container-disk-demo"}}]}}}}
    path = lab.state_dir / f"{name}.json"
    path.write_text(json.dumps(manifest))
    return str(path)


def test_bridge_binding_guest_holds_the_pod_ip(lab: Lab) -> None:
    # and names only the name servers and search domains its dnsConfig says (dnsPolicy None)
    dns = {"nameservers": ["192.0.2.53", "10.96.0.10"], "searches": ["corp.example."],
           "options": [{"name": "ndots", "value": "2"}]}
    manifest = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "bridged"},
                "spec": {"running": True, "template": {"spec": {
                    "dnsPolicy": "None", "dnsConfig": dns,
                    "domain": {"resources": {"requests": {"memory": "64M"}},
                               "devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}}],
                                           "interfaces": [{"name": "default", "bridge": {}}]}},
                    "networks": [{"name": "default", "pod": {}}],
                    "volumes": [{"name": "root", "containerDisk": {
                        "image": "quay.io/kubevirt/cirros-container-disk-demo"}}]}}}}
    path = lab.state_dir / "bridged.json"
    path.write_text(json.dumps(manifest))
    lab.cli("apply", "-f", str(path))
    vmi = started(lab, "bridged")
    pod_ip = vmi["status"]["interfaces"][0]["ipAddress"]
    console = lab.cli("console", "bridged", "--log", "--until", "VIRTBUS-GUEST-IP", "--timeout", "120").stdout
    assert f"VIRTBUS-GUEST-IP {pod_ip}" in console  # the guest sees the pod IP on its own eth0
    assert "hostname: bridged" in http_get(lab, other(vmi["status"]["nodeName"]), f"http://{pod_ip}/")
    lab.cli("console", "bridged", "--send", "cat /etc/resolv.conf; echo RESOLVER-$((6*7))\\n")
    said = lab.cli("console", "bridged", "--log", "--until", "RESOLVER-42", "--timeout", "60").stdout
    resolv = said.rsplit("cat /etc/resolv.conf", 1)[-1]
    assert "search corp.example\n" in resolv.replace("\r", "")
    assert re.findall(r"nameserver (\S+)", resolv) == ["192.0.2.53", "10.96.0.10"]
    assert vmi["spec"]["dnsPolicy"] == "None" and vmi["spec"]["dnsConfig"] == dns  # written back as given
    lab.cli("delete", "bridged", "--wait", "--timeout", "120")


def test_seed_testvm_2_on_the_secondary_network(lab: Lab) -> None:
    """testvm-2 as the seed writes it: pod network plus a bridge NIC on multus-br, reached from outside."""
    refused = lab.cli("apply", "-f", str(EXAMPLES / "testvm-2-secondary.yaml"), check=False)
    assert refused.returncode == 1 and "network 'multus-br' does not exist" in refused.stderr
    assert "network/multus-br applied" in lab.cli("apply", "-f", str(EXAMPLES / "multus-br.yaml")).stdout
    lab.cli("apply", "-f", str(EXAMPLES / "testvm-2-secondary.yaml"))
    vmi = started(lab, "testvm-2")
    ext = next(i for i in vmi["status"]["interfaces"] if i["name"] == "ext-net")
    address = ext["ipAddress"]
    assert address.startswith("192.168.100.") and address not in ("192.168.100.1", "192.168.100.255")
    for lease in (address, "10.0.2.2"):  # both NICs got their lease, in either order
        lab.cli("console", "testvm-2", "--log", "--until", f"VIRTBUS-GUEST-IP {lease}", "--timeout", "120")
    assert "hostname: testvm-2" in http_get(lab, "outside", f"http://{address}/")
    # and the guest reaches the provider's gateway (the outside host) from its own side
    lab.cli("console", "testvm-2", "--send", "ping -c 2 -W 3 192.168.100.1 >/dev/null && echo GATEWAY-$((40+2))\\n")
    lab.cli("console", "testvm-2", "--log", "--until", "GATEWAY-42", "--timeout", "60")
    # the address is the VM's: the same after a restart
    lab.cli("restart", "testvm-2", "--wait", "--timeout", "300")
    again = lab.json("get", "vmis", "testvm-2")
    assert isinstance(again, dict)
    assert next(i for i in again["status"]["interfaces"] if i["name"] == "ext-net")["ipAddress"] == address
    lab.cli("console", "testvm-2", "--log", "--until", f"VIRTBUS-GUEST-IP {address}", "--timeout", "120")  # its lease
    lab.cli("delete", "testvm-2", "--wait", "--timeout", "120")


def test_floating_ip_maps_one_to_one(lab: Lab) -> None:
    """The outside host reaches the VM on its floating IP, and sees the VM come from it (SNAT)."""
    lab.cli("apply", "-f", write_manifest(lab, "fipvm", "masquerade"))
    started(lab, "fipvm")
    lab.cli("console", "fipvm", "--log", "--until", "VIRTBUS-GUEST-IP", "--timeout", "120")
    assert "created" in lab.cli("fip", "create", "192.168.200.10", "--network", "provider").stdout
    bad = lab.cli("fip", "create", "192.168.100.50", "--network", "provider", check=False)
    assert bad.returncode == 1 and "not a usable address of provider" in bad.stderr
    lab.cli("fip", "attach", "192.168.200.10", "vm", "fipvm")
    assert "hostname: fipvm" in http_get(lab, "outside", "http://192.168.200.10/")

    # guest -> outside: a server on the outside host logs the client address it sees
    server = subprocess.Popen(["ip", "netns", "exec", f"{lab.prefix}-outside", sys.executable, "-m", "http.server",
                               "--bind", "192.168.200.1", "8000"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    try:
        time.sleep(1)
        lab.cli("console", "fipvm", "--send",
                "printf 'GET /from-the-guest HTTP/1.0\\\\r\\\\n\\\\r\\\\n' | nc 192.168.200.1 8000 >/dev/null\\n")
        time.sleep(3)
    finally:
        server.terminate()
        _, log = server.communicate(timeout=10)
    assert "192.168.200.10" in log and "/from-the-guest" in log, log

    lab.cli("fip", "detach", "192.168.200.10")
    deadline = time.monotonic() + 10
    while lab_exec(lab, "outside", "curl", "-s", "-m", "2", "http://192.168.200.10/").returncode == 0:
        assert time.monotonic() < deadline, "the floating IP still answers after detach"
        time.sleep(0.5)
    lab.cli("fip", "delete", "192.168.200.10")
    lab.cli("delete", "fipvm", "--wait", "--timeout", "120")


def test_floating_ip_follows_its_vm_to_another_node(lab: Lab) -> None:
    """Pinned to node1, then re-pinned to node2 and restarted: the outside host reaches it on the same address."""
    lab.cli("apply", "-f", write_manifest(lab, "mover", "masquerade", node="node1", running=True))
    assert started(lab, "mover")["status"]["nodeName"] == "node1"
    lab.cli("fip", "create", "192.168.200.20", "--network", "provider")
    lab.cli("fip", "attach", "192.168.200.20", "vm", "mover")
    assert "hostname: mover" in http_get(lab, "outside", "http://192.168.200.20/")

    lab.cli("apply", "-f", write_manifest(lab, "mover", "masquerade", node="node2", running=True))
    lab.cli("restart", "mover", "--wait", "--timeout", "300")
    moved = lab.json("get", "vmis", "mover")
    assert isinstance(moved, dict) and moved["status"]["nodeName"] == "node2"
    assert "hostname: mover" in http_get(lab, "outside", "http://192.168.200.20/")
    held = {node: "192.168.200.20/32" in lab_exec(lab, node, "ip", "-o", "addr", "show").stdout
            for node in ("node1", "node2")}
    assert held == {"node1": False, "node2": True}

    # deleting the VM removes what exposed it: its node port and its floating IP's NAT
    out = lab.cli("expose", "vm", "mover", "--port", "80").stdout
    node_port = int(out.split("node port ")[1].split()[0])
    node2 = lab.json("get", "nodes", "node2")
    assert isinstance(node2, dict)
    address = next(a["address"] for a in node2["status"]["addresses"] if a["type"] == "InternalIP")
    node_url = f"http://{address}:{node_port}/"
    assert "hostname: mover" in http_get(lab, "outside", node_url)
    lab.cli("delete", "mover", "--wait", "--timeout", "120")
    assert "mover" not in lab.cli("get", "exposures").stdout
    rows = [line.split() for line in lab.cli("fip", "list").stdout.splitlines()[1:]]
    assert rows == [["192.168.200.20", "provider", "<none>"]]  # kept, but attached to nothing
    for url in ("http://192.168.200.20/", node_url):
        deadline = time.monotonic() + 10
        while lab_exec(lab, "outside", "curl", "-s", "-m", "2", url).returncode == 0:
            assert time.monotonic() < deadline, f"{url} still answers after the VM was deleted"
            time.sleep(0.5)
    assert "192.168.200.20/32" not in lab_exec(lab, "node2", "ip", "-o", "addr", "show").stdout
    lab.cli("fip", "delete", "192.168.200.20")
