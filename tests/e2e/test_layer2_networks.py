"""Layer-2 secondary networks (NADs without ipam): virtbus gives no address, the guest gets its lease
from the segment's own DHCP server (the lab's dnsmasq on the outside host), and the VMI's status
shows the address the launcher saw in the DHCP ACK."""

from __future__ import annotations

import json
import re
import time
from ipaddress import IPv4Address
from typing import Any

import yaml

from ctl.labdhcp import OVS_DHCP, PROVIDER_DHCP, leases
from launcher.podnic import secondary_host_side
from tests.conftest import REPO
from tests.e2e.conftest import Lab
from tests.e2e.test_networking import lab_exec, started


def vm_on(lab: Lab, name: str, node: str, network: str, **spec: str) -> str:
    """testvm-2 as the seed writes it (pod network + a bridge NIC ext-net), on network, pinned to node."""
    doc = yaml.safe_load((REPO / "examples" / "testvm-2-secondary.yaml").read_text())
    doc["metadata"]["name"] = name
    doc["spec"]["running"] = True
    template = doc["spec"]["template"]["spec"]
    template["networks"][1]["multus"]["networkName"] = network
    template.update(nodeSelector={"kubernetes.io/hostname": node}, **spec)
    path = lab.state_dir / f"{name}.json"
    path.write_text(json.dumps(doc))
    return str(path)


def status_address(lab: Lab, name: str, interface: str, timeout: float = 30) -> str:
    """The interface's address in ``get vmis NAME -o json``, once the node reported it."""
    deadline = time.monotonic() + timeout
    while True:
        vmi: Any = lab.json("get", "vmis", name)
        nic = next(i for i in vmi["status"]["interfaces"] if i["name"] == interface)
        if nic.get("ipAddress"):
            return str(nic["ipAddress"])
        assert time.monotonic() < deadline, f"no address in the status of {interface}: {vmi['status']}"
        time.sleep(0.5)


def console_lease(lab: Lab, name: str, prefix: str) -> str:
    out = lab.cli("console", name, "--log", "--until", f"VIRTBUS-GUEST-IP {prefix}", "--timeout", "120").stdout
    found = re.findall(rf"VIRTBUS-GUEST-IP ({re.escape(prefix)}\d+)", out)
    assert found, out
    return str(found[-1])


def test_a_guest_on_a_nad_without_ipam_gets_its_address_from_the_segments_dhcp(lab: Lab) -> None:
    lab.cli("apply", "-f", str(REPO / "examples" / "provider-l2.yaml"))
    lab.cli("apply", "-f", vm_on(lab, "l2vm", "node1", "provider-l2"))
    vmi = started(lab, "l2vm")
    nic = next(i for i in vmi["status"]["interfaces"] if i["name"] == "ext-net")
    got = console_lease(lab, "l2vm", "192.168.200.")
    assert IPv4Address(PROVIDER_DHCP.first) <= IPv4Address(got) <= IPv4Address(PROVIDER_DHCP.last)
    assert status_address(lab, "l2vm", "ext-net") == got  # learnt from the ACK, no guest agent
    assert leases(lab.state_dir, PROVIDER_DHCP).get(nic["mac"]) == got  # the lab's dnsmasq gave it
    console_lease(lab, "l2vm", "10.0.2.")  # the pod network's NIC kept its own lease
    lab.cli("console", "l2vm", "--send", "ping -c 2 -W 3 192.168.200.1 >/dev/null && echo SEGMENT-$((6*7))\\n")
    lab.cli("console", "l2vm", "--log", "--until", "SEGMENT-42", "--timeout", "60")
    lab.cli("delete", "l2vm", "--wait", "--timeout", "120")


def test_the_articles_app_finds_its_database_by_name_over_the_ovs_network(lab: Lab) -> None:
    """The Network Rehash article's flow: two guests on two nodes with a second NIC on ovs-net-br1 (each
    node's Open vSwitch bridge br1, userspace datapath), addresses from the br1 segment's DHCP server;
    the database is a headless Service with hand-written Endpoints on its OVS address, and the app
    connects to it by the Service's name over the OVS network."""
    lab.cli("apply", "-f", str(REPO / "examples" / "ovs-net-br1.yaml"))
    lab.cli("apply", "-f", vm_on(lab, "mongo-vm", "node1", "ovs-net-br1", hostname="mongo0", subdomain="mongo"))
    lab.cli("apply", "-f", vm_on(lab, "app", "node2", "ovs-net-br1"))
    started(lab, "mongo-vm")
    started(lab, "app")
    db_lease = console_lease(lab, "mongo-vm", "192.168.210.")
    address = status_address(lab, "mongo-vm", "ext-net")
    assert address == db_lease
    assert IPv4Address(OVS_DHCP.first) <= IPv4Address(address) <= IPv4Address(OVS_DHCP.last)
    app_lease = console_lease(lab, "app", "192.168.210.")
    assert status_address(lab, "app", "ext-net") == app_lease != address
    written = yaml.safe_load_all((REPO / "examples" / "mongo-headless-service.yaml").read_text())
    service, endpoints = list(written)
    endpoints["subsets"][0]["addresses"][0]["ip"] = address  # where the database VM is on br1
    endpoints["subsets"][0]["ports"][0]["port"] = 80  # the test guest serves HTTP, not MongoDB
    for doc in (service, endpoints):
        path = lab.state_dir / f"{doc['kind']}.json"
        path.write_text(json.dumps(doc))
        lab.cli("apply", "-f", str(path))
    console_lease(lab, "app", "10.0.2.")  # the pod network's NIC (cluster DNS) is up too
    lab.cli("console", "app", "--send", f"nslookup mongo | grep -q {address} && wget -q -O - http://mongo/ | "
                                        "grep -q 'hostname: mongo0' && echo DB-REACHED-$((6*7))\\n")
    lab.cli("console", "app", "--log", "--until", "DB-REACHED-42", "--timeout", "60")
    for name in ("mongo-vm", "app"):
        lab.cli("delete", name, "--wait", "--timeout", "120")
    lab.cli("delete", "service", "mongo")
    assert "mongo" not in lab.cli("get", "endpoints").stdout, "its hand-written Endpoints went with it"
    # the VMs' ports left br1 with them: only its uplink (and br1 itself) remain
    ports = lab_exec(lab, "node1", "ovs-vsctl", f"--db=unix:{lab.state_dir}/ovs/node1/db.sock", "list-ports", "br1")
    assert ports.stdout.split() == ["ovs0"], ports


def test_guests_on_an_ovs_vlan_reach_each_other_across_nodes(lab: Lab) -> None:
    """An ovs NAD with a vlan (and virtbus's ipam): each VM's port on br1 is an access port of the VLAN,
    and the VLAN crosses the lab's OVS segment between the nodes (br1's uplinks carry it tagged)."""
    nad = {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
           "metadata": {"name": "ovs-vlan211"},
           "spec": {"config": json.dumps({"cniVersion": "0.3.1", "type": "ovs", "bridge": "br1", "vlan": 211,
                                          "ipam": {"type": "host-local", "subnet": "192.168.211.0/24"}})}}
    path = lab.state_dir / "ovs-vlan211.json"
    path.write_text(json.dumps(nad))
    lab.cli("apply", "-f", str(path))
    lab.cli("apply", "-f", vm_on(lab, "vlan-a", "node1", "ovs-vlan211"))
    lab.cli("apply", "-f", vm_on(lab, "vlan-b", "node2", "ovs-vlan211"))
    started(lab, "vlan-a")
    started(lab, "vlan-b")
    peer = status_address(lab, "vlan-b", "ext-net")
    console_lease(lab, "vlan-a", "192.168.211.")
    console_lease(lab, "vlan-b", "192.168.211.")
    tags = lab_exec(lab, "node1", "ovs-vsctl", f"--db=unix:{lab.state_dir}/ovs/node1/db.sock", "--columns=name,tag",
                    "find", "port", "tag=211").stdout
    assert tags.count("211") == 1, tags  # vlan-a's port, an access port of VLAN 211
    lab.cli("console", "vlan-a", "--send", f"ping -c 2 -W 3 {peer} >/dev/null && echo VLAN-$((6*7))\\n")
    lab.cli("console", "vlan-a", "--log", "--until", "VLAN-42", "--timeout", "60")
    for name in ("vlan-a", "vlan-b"):
        lab.cli("delete", name, "--wait", "--timeout", "120")


def test_guests_on_a_bridge_vlan_reach_each_other_across_nodes_and_no_other_vlan(lab: Lab) -> None:
    """A bridge NAD with a vlan (examples/multus-br-vlan.yaml, as the bridge CNI writes one): each VM's
    port on its node's multus-bridge is an access port of VLAN 105, and the VLAN crosses the lab's
    provider segment between the nodes tagged. A VM of VLAN 106 on the same bridge, given an address in
    VLAN 105's subnet, reaches neither, though it sits beside one of them."""
    for node in ("node1", "node2"):  # each handler found its kernel able, and the scheduler may pick it
        record: Any = lab.json("get", "nodes", node)
        assert record["metadata"]["annotations"]["virtbus.io/vlan-access-ports"] == "true"
    lab.cli("apply", "-f", str(REPO / "examples" / "multus-br-vlan.yaml"))
    other_vlan = yaml.safe_load((REPO / "examples" / "multus-br-vlan.yaml").read_text())
    config = json.loads(other_vlan["spec"]["config"])
    config.update(name="multus-br-vlan106", vlan=106)
    config["ipam"] = {"type": "host-local", "subnet": "192.168.106.0/24"}
    other_vlan["metadata"]["name"] = "multus-br-vlan106"
    other_vlan["spec"]["config"] = json.dumps(config)
    path = lab.state_dir / "multus-br-vlan106.json"
    path.write_text(json.dumps(other_vlan))
    lab.cli("apply", "-f", str(path))
    lab.cli("apply", "-f", vm_on(lab, "brvlan-a", "node1", "multus-br-vlan105"))
    lab.cli("apply", "-f", vm_on(lab, "brvlan-b", "node2", "multus-br-vlan105"))
    lab.cli("apply", "-f", vm_on(lab, "brvlan-c", "node2", "multus-br-vlan106"))
    for name in ("brvlan-a", "brvlan-b", "brvlan-c"):
        started(lab, name)
    a = console_lease(lab, "brvlan-a", "192.168.105.")
    b = console_lease(lab, "brvlan-b", "192.168.105.")
    console_lease(lab, "brvlan-c", "192.168.106.")
    filters = lab_exec(lab, "node1", "tc", "filter", "show", "dev", secondary_host_side("brvlan-a", 1),
                       "ingress").stdout
    assert "vlan105tag" in filters, filters  # brvlan-a's port on node1 tags VLAN 105
    assert "vlan_filtering 0" in lab_exec(lab, "node1", "ip", "-d", "link", "show", "multus-bridge").stdout
    lab.cli("console", "brvlan-a", "--send", f"ping -c 2 -W 3 {b} >/dev/null && echo VLAN-$((6*7))\\n")
    lab.cli("console", "brvlan-a", "--log", "--until", "VLAN-42", "--timeout", "60")
    # brvlan-c, on VLAN 106, is given an address of VLAN 105's subnet by hand: only the VLAN keeps it apart
    lab.cli("console", "brvlan-c", "--send", "ip addr add 192.168.105.50/24 dev eth1 && echo ADDED-$((6*7))\\n")
    lab.cli("console", "brvlan-c", "--log", "--until", "ADDED-42", "--timeout", "60")
    for target in (a, b):  # VLAN 106 to 105: across the nodes, and on one node's bridge
        # unanswered, though its ARP went out of eth1 (the neighbour left INCOMPLETE or FAILED)
        lab.cli("console", "brvlan-c", "--send",
                f"ping -c 2 -W 2 {target} >/dev/null || {{ ip neigh show {target} dev eth1 | "
                f"grep -qE 'FAILED|INCOMPLETE' && echo APART-{target.split('.')[-1]}-$((6*7)); }}\\n")
        lab.cli("console", "brvlan-c", "--log", "--until", f"APART-{target.split('.')[-1]}-42", "--timeout", "60")
    for name in ("brvlan-a", "brvlan-b", "brvlan-c"):
        lab.cli("delete", name, "--wait", "--timeout", "120")
