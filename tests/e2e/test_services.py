"""Services for real: a VM exposed as virtctl does, reached by its virtual IP from another node and from
a guest there, by its node port from the outside host through either node, and still so once the VM
was restarted on the other node; a Service with no endpoint refuses at once."""

from __future__ import annotations

import json
import re
import time

import pytest
import yaml

from tests.conftest import REPO
from tests.e2e.conftest import Lab
from tests.e2e.test_networking import http_get, lab_exec, started

pytestmark = pytest.mark.e2e
MARKER = "VIRTBUS-GUEST-READY"


def web_manifest(lab: Lab, name: str, node: str, labels: dict[str, str], **spec: object) -> str:
    manifest = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": name},
                "spec": {"running": True, "template": {"metadata": {"labels": labels}, "spec": {
                    **spec, "nodeSelector": {"kubernetes.io/hostname": node},
                    "domain": {"resources": {"requests": {"memory": "64M"}},
                               "devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}}],
                                           "interfaces": [{"name": "default", "masquerade": {}}]}},
                    "networks": [{"name": "default", "pod": {}}],
                    "volumes": [{"name": "root", "containerDisk": {
                        "image": "quay.io/kubevirt/cirros-container-disk-demo"}}]}}}}
    path = lab.state_dir / f"{name}-{node}.json"
    path.write_text(json.dumps(manifest))
    return str(path)


def node_address(lab: Lab, node: str) -> str:
    found = lab.json("get", "nodes", node)
    assert isinstance(found, dict)
    return str(next(a["address"] for a in found["status"]["addresses"] if a["type"] == "InternalIP"))


def endpoint_ips(lab: Lab, name: str) -> list[str]:
    ends = lab.json("get", "endpoints", name)
    assert isinstance(ends, dict)
    return [a["ip"] for s in ends.get("subsets") or [] for a in s["addresses"]]


def test_a_service_follows_its_vm_and_answers_on_every_node(lab: Lab) -> None:
    labels = {"kubevirt.io/domain": "web"}
    lab.cli("apply", "-f", web_manifest(lab, "web", "node1", labels))
    # the client's dnsConfig adds a search domain after the cluster's (dnsPolicy ClusterFirst, the default)
    lab.cli("apply", "-f", web_manifest(lab, "client", "node2", {"app": "client"},
                                        dnsConfig={"searches": ["corp.example"]}))
    web = started(lab, "web")
    started(lab, "client")
    out = lab.cli("expose", "vm", "web", "--name", "web-http", "--port", "8000", "--target-port", "80",
                  "--type", "NodePort").stdout
    assert "service/web-http exposed" in out
    service = lab.json("get", "services", "web-http")
    assert isinstance(service, dict) and service["spec"]["selector"] == labels
    cluster_ip, node_port = service["spec"]["clusterIP"], service["spec"]["ports"][0]["nodePort"]
    assert endpoint_ips(lab, "web-http") == [web["status"]["interfaces"][0]["ipAddress"]]

    # the virtual IP from the other node, and the node port through either node from outside
    assert "hostname: web" in http_get(lab, "node2", f"http://{cluster_ip}:8000/")
    for node in ("node1", "node2"):
        assert "hostname: web" in http_get(lab, "outside", f"http://{node_address(lab, node)}:{node_port}/")
    # a LoadBalancer: a floating IP of the provider network, answered by the node running the endpoint
    lab.cli("fip", "create", "192.168.200.40", "--network", "provider")
    lb = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-lb"},
          "spec": {"type": "LoadBalancer", "selector": labels, "ports": [{"port": 8080, "targetPort": 80}]}}
    (lab.state_dir / "lb.json").write_text(json.dumps(lb))
    lab.cli("apply", "-f", str(lab.state_dir / "lb.json"))
    assert "192.168.200.40" in lab.cli("get", "services", "web-lb").stdout
    assert "hostname: web" in http_get(lab, "outside", "http://192.168.200.40:8080/")
    # from a guest on the other node, by the virtual IP
    lab.cli("console", "client", "--log", "--until", MARKER, "--timeout", "180")
    lab.cli("console", "client", "--send", f"wget -q -O - http://{cluster_ip}:8000/ | grep -q 'hostname: web' "
                                           "&& echo SERVICE-REACHED-$((6*7))\\n")
    lab.cli("console", "client", "--log", "--until", "SERVICE-REACHED-42", "--timeout", "60")
    # and by its name, short as the search list allows, from the cluster DNS its lease named
    lab.cli("console", "client", "--send", "cat /etc/resolv.conf; echo RESOLVER-$((6*7))\\n")
    resolv = lab.cli("console", "client", "--log", "--until", "RESOLVER-42", "--timeout", "60").stdout
    resolv = resolv.rsplit("cat /etc/resolv.conf", 1)[-1].replace("\r", "")
    assert "search default.svc.cluster.local svc.cluster.local cluster.local corp.example\n" in resolv
    assert re.findall(r"nameserver (\S+)", resolv) == ["10.96.0.10"]
    lab.cli("console", "client", "--send", f"nslookup web-http | grep -q {cluster_ip} && wget -q -O - "
                                           "http://web-http:8000/ | grep -q 'hostname: web' "
                                           "&& echo NAME-REACHED-$((6*7))\\n")
    lab.cli("console", "client", "--log", "--until", "NAME-REACHED-42", "--timeout", "60")
    lab.cli("console", "client", "--send", "time sh -c 'for i in 1 2 3 4 5 6 7 8 9 10; do nslookup "
                                           "web-http.default.svc.cluster.local >/dev/null; done'; "
                                           "echo TIMED-$((6*7))\\n")
    timed = lab.cli("console", "client", "--log", "--until", "TIMED-42", "--timeout", "60").stdout
    found = re.findall(r"real\s+(\d+)m\s*([\d.]+)s", timed)
    assert found, timed[-500:]
    minutes, seconds = found[-1]
    print(f"DNS from a guest: {(int(minutes) * 60 + float(seconds)) / 10 * 1000:.0f} ms per nslookup (A and AAAA)")
    lab.cli("console", "client", "--send", "nslookup example.com; echo NX-$((6*7))\\n")
    outside = lab.cli("console", "client", "--log", "--until", "NX-42", "--timeout", "60").stdout
    assert "NXDOMAIN" in outside.rsplit("nslookup example.com", 1)[-1], "a name not ours: NXDOMAIN, nothing leaves"

    # restarted on the other node: the endpoint follows, the same addresses keep answering
    lab.cli("apply", "-f", web_manifest(lab, "web", "node2", labels))
    lab.cli("restart", "web", "--wait", "--timeout", "300")
    moved = lab.json("get", "vmis", "web")
    assert isinstance(moved, dict) and moved["status"]["nodeName"] == "node2"
    running = time.monotonic()
    new_ip = moved["status"]["interfaces"][0]["ipAddress"]
    while endpoint_ips(lab, "web-http") != [new_ip]:
        assert time.monotonic() - running < 10, "the endpoint did not follow the VM"
        time.sleep(0.2)
    print(f"endpoints followed the VM {time.monotonic() - running:.2f} s after restart --wait returned")
    assert "hostname: web" in http_get(lab, "node1", f"http://{cluster_ip}:8000/")
    assert "hostname: web" in http_get(lab, "outside", f"http://{node_address(lab, 'node1')}:{node_port}/")
    assert "hostname: web" in http_get(lab, "outside", "http://192.168.200.40:8080/")  # now node2 answers
    held = {node: "192.168.200.40/32" in lab_exec(lab, node, "ip", "-o", "addr").stdout for node in ("node1", "node2")}
    assert held == {"node1": False, "node2": True}

    # stopped: no endpoint, and the virtual IP refuses at once rather than hanging
    lab.cli("stop", "web", "--wait", "--timeout", "120")
    assert endpoint_ips(lab, "web-http") == []
    deadline = time.monotonic() + 10
    while (refused := lab_exec(lab, "node1", "curl", "-s", "-m", "3", f"http://{cluster_ip}:8000/")).returncode != 7:
        assert time.monotonic() < deadline, f"curl: {refused.returncode} {refused.stderr}"
        time.sleep(0.3)
    lab.cli("delete", "service", "web-http")
    lab.cli("delete", "service", "web-lb")
    lab.cli("fip", "delete", "192.168.200.40")
    assert "web-http" not in lab.cli("get", "services").stdout
    for name in ("web", "client"):
        lab.cli("delete", name, "--wait", "--timeout", "120")


def secondary_manifest(lab: Lab, name: str, node: str, **spec: str) -> str:
    """testvm-2 as the seed writes it (pod network + a bridge NIC on multus-br), pinned to node."""
    doc = yaml.safe_load((REPO / "examples" / "testvm-2-secondary.yaml").read_text())
    doc["metadata"]["name"] = name
    doc["spec"]["running"] = True
    doc["spec"]["template"]["spec"].update(nodeSelector={"kubernetes.io/hostname": node}, **spec)
    path = lab.state_dir / f"{name}.json"
    path.write_text(json.dumps(doc))
    return str(path)


def test_the_articles_app_finds_its_database_by_name_over_the_secondary_network(lab: Lab) -> None:
    """Two guests on two nodes with a second NIC on multus-br; the database is a headless Service with
    Endpoints written by hand on its secondary address, and the app connects to it by the Service's name."""
    lab.cli("apply", "-f", str(REPO / "examples" / "multus-br.yaml"))
    lab.cli("apply", "-f", secondary_manifest(lab, "mongo-vm", "node1", hostname="mongo0", subdomain="mongo"))
    lab.cli("apply", "-f", secondary_manifest(lab, "app", "node2"))
    db = started(lab, "mongo-vm")
    started(lab, "app")
    address = next(i for i in db["status"]["interfaces"] if i["name"] == "ext-net")["ipAddress"]
    written = yaml.safe_load_all((REPO / "examples" / "mongo-headless-service.yaml").read_text())
    service, endpoints = list(written)
    endpoints["subsets"][0]["addresses"][0]["ip"] = address  # where the database VM is on multus-br
    endpoints["subsets"][0]["ports"][0]["port"] = 80  # the test guest serves HTTP, not MongoDB
    for doc in (service, endpoints):
        path = lab.state_dir / f"{doc['kind']}.json"
        path.write_text(json.dumps(doc))
        lab.cli("apply", "-f", str(path))
    assert "None" in lab.cli("get", "services", "mongo").stdout
    assert address in lab.cli("get", "endpoints", "mongo").stdout
    for lease in ("192.168.100.", "10.0.2.2"):  # both its NICs are up
        lab.cli("console", "app", "--log", "--until", f"VIRTBUS-GUEST-IP {lease}", "--timeout", "120")
    lab.cli("console", "app", "--send", f"nslookup mongo | grep -q {address} && wget -q -O - http://mongo/ | "
                                        "grep -q 'hostname: mongo0' && echo DB-REACHED-$((6*7))\\n")
    lab.cli("console", "app", "--log", "--until", "DB-REACHED-42", "--timeout", "60")
    # the database VM's own name in its subdomain's headless Service is its name only where a selector
    # made the Service; hand-written Endpoints name no host: mongo0.mongo is unknown
    lab.cli("console", "app", "--send", "nslookup mongo0.mongo; echo HOST-$((6*7))\\n")
    assert "NXDOMAIN" in lab.cli("console", "app", "--log", "--until", "HOST-42", "--timeout", "60").stdout.rsplit(
        "nslookup mongo0.mongo", 1)[-1]
    for name in ("mongo-vm", "app"):
        lab.cli("delete", name, "--wait", "--timeout", "120")
    lab.cli("delete", "service", "mongo")
    assert "mongo" not in lab.cli("get", "endpoints").stdout, "its hand-written Endpoints went with it"
