"""VLAN access ports on a Linux bridge that filters no VLANs (servicekit.vlanports), on the real kernel:
pods plumbed by the launcher's own code onto a node bridge, two on VLAN 5 and one on VLAN 6, with a
trunk (a plain port, as a node's uplink is) that sees what goes over the wire."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from launcher import namespaces, podnic
from proto.errors import ApiError, Code
from servicekit import vlanports
from servicekit.netlink import KernelNetlink
from tests.integration.test_netlink import in_netns, ip, reaches

# Frames seen on a link until the test closes the sniffer's stdin, as (VLAN ID or None, ethertype):
# PACKET_AUXDATA carries the tag the kernel keeps beside the frame (TP_STATUS_VLAN_VALID), as tcpdump reads it.
SNIFF = textwrap.dedent("""
    import json, select, socket, struct, sys
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    s.bind((sys.argv[1], 0))
    s.setsockopt(263, 8, 1)  # SOL_PACKET, PACKET_AUXDATA
    print("ready", flush=True)
    seen = set()
    while True:  # until the test closes our stdin
        readable, _, _ = select.select([s, sys.stdin], [], [], 30)
        if sys.stdin in readable or not readable:
            break
        data, ancillary, _, _ = s.recvmsg(2048, 256)
        vid = None
        for level, kind, raw in ancillary:
            if (level, kind) == (263, 8):
                status, _, _, _, _, tci = struct.unpack("IIIHHH", raw[:18])
                vid = tci & 0xFFF if status & 0x10 else None
        seen.add((vid, data[12:14].hex()))
    print(json.dumps(sorted(seen, key=str)))
""")


@pytest.fixture
def netns() -> Iterator[list[str]]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and ip(8)")
    names = [f"vbtvl-{secrets.token_hex(4)}" for _ in range(5)]
    try:
        yield names
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def test_access_ports_tag_on_the_trunk_and_keep_vlans_apart(netns: list[str]) -> None:
    node, pod_a, pod_b, pod_c, trunk = netns
    for name in netns:
        namespaces.create_netns(name)
    KernelNetlink(node).ensure_bridge("vbtvlan")
    KernelNetlink(node).set_up("vbtvlan")
    addresses = {pod_a: ("10.5.0.1/24", 5), pod_b: ("10.5.0.2/24", 5), pod_c: ("10.5.0.3/24", 6)}
    for index, (pod, (address, vid)) in enumerate(addresses.items()):
        nic = podnic.plumb_secondary(vmi=f"vm{index}", index=1, pod_netns=pod, node_netns=node,
                                     node_bridge="vbtvlan", vlan=vid)
        subprocess.run(["ip", "-n", pod, "addr", "add", address, "dev", nic], check=True)
    # the trunk: a plain port of the bridge, untagged, as the node's uplink is
    subprocess.run(["ip", "-n", node, "link", "add", "vbtrunk", "type", "veth", "peer", "name", "t0",
                    "netns", trunk], check=True)
    subprocess.run(["ip", "-n", node, "link", "set", "vbtrunk", "master", "vbtvlan", "up"], check=True)
    subprocess.run(["ip", "-n", trunk, "link", "set", "t0", "up"], check=True)
    subprocess.run(["ip", "-n", trunk, "addr", "add", "10.5.0.9/24", "dev", "t0"], check=True)
    host_a = podnic.secondary_host_side("vm0", 1)
    filters = subprocess.run(["tc", "-n", node, "filter", "show", "dev", host_a, "ingress"],
                             capture_output=True, text=True, check=True).stdout
    assert "vlan5tag" in filters and "direct-action" in filters, filters
    assert "vlan_filtering 0" in ip(node, "-d", "link", "show", "vbtvlan")  # the bridge left as it was

    sniffer = subprocess.Popen(["ip", "netns", "exec", trunk, sys.executable, "-c", SNIFF, "t0"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert sniffer.stdout is not None and sniffer.stdout.readline().strip() == "ready"
        assert not reaches(trunk, "10.5.0.1")  # untagged, from the trunk: no access port takes it
        assert reaches(pod_a, "10.5.0.2")  # one VLAN: through the bridge, tagged both ways
        assert not reaches(pod_a, "10.5.0.3")  # VLAN 5 to VLAN 6
        assert not reaches(pod_c, "10.5.0.2")
        out, _ = sniffer.communicate(input="", timeout=30)
    finally:
        if sniffer.poll() is None:
            sniffer.kill()
            sniffer.wait()
    seen = {(vid, kind) for vid, kind in json.loads(out.strip().splitlines()[-1])}
    assert (5, "0806") in seen and (6, "0806") in seen, seen  # ARP of both VLANs went over the trunk tagged
    assert (None, "0806") in seen  # and the trunk's own, untagged
    assert not {vid for vid, _ in seen} - {5, 6, None}, seen


def test_a_port_again_keeps_one_pair_of_programs(netns: list[str]) -> None:
    node = netns[0]
    namespaces.create_netns(node)
    subprocess.run(["ip", "-n", node, "link", "add", "vbtp", "type", "veth", "peer", "name", "vbtq"], check=True)
    for vid in (7, 7, 8):  # a launcher run again, then another VLAN
        KernelNetlink(node).set_access_vlan("vbtp", vid)
    for hook, name in (("ingress", "vlan8tag"), ("egress", "vlan8untag")):
        shown = in_netns(node, "tc", "filter", "show", "dev", "vbtp", hook)
        assert shown.count(" handle ") == 1 and name in shown, shown


def test_what_no_port_can_be_is_refused(netns: list[str]) -> None:
    node = netns[0]
    namespaces.create_netns(node)
    with pytest.raises(ApiError) as missing:
        KernelNetlink(node).set_access_vlan("vbtnone", 5)
    assert missing.value.code is Code.NOT_FOUND
    for vid in (0, 4095):
        with pytest.raises(ApiError) as bad:
            vlanports.tag_program(vid)
        assert bad.value.code is Code.INVALID


def test_this_kernel_says_it_can_and_a_handler_would_register_so() -> None:
    """What a node's handler asks at its start (handler.__main__.vlan_ports_here): both programs load."""
    assert vlanports.available() is None
