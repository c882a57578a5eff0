"""A layer-2 network's own DHCP server (the lab's dnsmasq, with the lab's command line) leases an
address to a real client (busybox udhcpc, as the test guest runs); the launcher's snooper on the
client's link learns it from the ACK, without any agent in the client."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from ctl.labdhcp import PROVIDER_DHCP, dnsmasq_command, leases
from launcher import dhcp_snoop
from launcher.dhcp_snoop import packet_socket_in_netns, snoop_in_netns

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="dnsmasq-base is not installed")]


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def segment(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """(server netns, client netns, client MAC), the server's dnsmasq running."""
    tag = secrets.token_hex(3)
    srv, cli = f"vbsnoop-s{tag}", f"vbsnoop-c{tag}"
    proc = None
    try:
        ip("netns", "add", srv)
        ip("netns", "add", cli)
        ip("-n", srv, "link", "add", "eth0", "type", "veth", "peer", "name", "net1", "netns", cli)
        ip("-n", srv, "addr", "add", "192.168.200.1/24", "dev", "eth0")
        for ns, link in ((srv, "eth0"), (cli, "net1"), (srv, "lo")):
            ip("-n", ns, "link", "set", link, "up")
        mac = ip("-n", cli, "-o", "link", "show", "net1").split("link/ether ")[1].split()[0]
        proc = subprocess.Popen(dnsmasq_command(srv, PROVIDER_DHCP, tmp_path), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        yield srv, cli, mac
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        for ns in (srv, cli):
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, check=False)


def test_the_snooper_learns_the_address_the_segments_server_leased(segment: tuple[str, str, str],
                                                                     tmp_path: Path) -> None:
    _, cli, mac = segment
    seen: list[IPv4Address] = []

    async def run() -> None:
        stop = asyncio.Event()

        async def learnt(address: IPv4Address) -> None:
            seen.append(address)
            stop.set()

        snooper = asyncio.create_task(snoop_in_netns(cli, "net1", mac, learnt, stop))
        await asyncio.sleep(0.3)  # the socket is open before the client asks
        client = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", cli, "busybox", "udhcpc", "-i", "net1", "-n", "-q", "-t", "5", "-s", "/bin/true",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        assert await asyncio.wait_for(client.wait(), 30) == 0
        await asyncio.wait_for(snooper, 10)

    asyncio.run(run())
    assert len(seen) == 1
    assert IPv4Address(PROVIDER_DHCP.first) <= seen[0] <= IPv4Address(PROVIDER_DHCP.last)
    assert leases(tmp_path, PROVIDER_DHCP) == {mac: str(seen[0])}  # what the server says it gave


def test_an_ack_for_another_mac_is_not_taken(segment: tuple[str, str, str]) -> None:
    _, cli, _ = segment
    seen: list[IPv4Address] = []

    async def run() -> None:
        stop = asyncio.Event()

        async def learnt(address: IPv4Address) -> None:
            seen.append(address)

        snooper = asyncio.create_task(snoop_in_netns(cli, "net1", "02:00:00:00:00:01", learnt, stop))
        await asyncio.sleep(0.3)
        client = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", cli, "busybox", "udhcpc", "-i", "net1", "-n", "-q", "-t", "5", "-s", "/bin/true",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        assert await asyncio.wait_for(client.wait(), 30) == 0
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.wait_for(snooper, 5)

    asyncio.run(run())
    assert seen == []


def test_the_lab_serves_only_its_segment() -> None:
    cmd = dnsmasq_command("ns", dataclasses.replace(PROVIDER_DHCP, interface="eth7"), Path("/s"))
    assert "--interface=eth7" in cmd and "--bind-interfaces" in cmd and "--except-interface=lo" in cmd
    assert "--port=0" in cmd  # no DNS server on the segment
    assert cmd[:4] == ["ip", "netns", "exec", "ns"]


def test_the_snoopers_socket_gets_only_what_could_be_a_servers_dhcp(segment: tuple[str, str, str]) -> None:
    """Its kernel filter keeps the guest's own traffic (here ICMP, ARP) off the launcher."""
    srv, cli, _ = segment
    ip("-n", cli, "addr", "add", "192.168.200.99/24", "dev", "net1")
    sock = packet_socket_in_netns(cli, "net1")
    sock.settimeout(1)

    def frames() -> int:
        n = 0
        try:
            while True:
                sock.recv(65535)
                n += 1
        except TimeoutError:
            return n

    with sock:
        subprocess.run(["ip", "netns", "exec", srv, "busybox", "ping", "-c", "2", "192.168.200.99"],
                       capture_output=True, check=True)
        assert frames() == 0
        # (from the client's side: the server's port 67 is dnsmasq's; the socket sees both directions)
        subprocess.run(["ip", "netns", "exec", cli, sys.executable, "-c",
                        "import socket; u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                        "u.bind(('192.168.200.99', 67)); u.sendto(b'x' * 10, ('192.168.200.1', 68))"], check=True)
        assert frames() == 1


def test_frames_from_before_the_filter_is_attached_are_not_taken(segment: tuple[str, str, str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The guest talks while the socket is being made (a loaded node can stall the thread there):
    none of that reaches the launcher unfiltered."""
    _, cli, _ = segment
    ip("-n", cli, "addr", "add", "192.168.200.99/24", "dev", "net1")
    attach = dhcp_snoop._attach_filter

    def talk_then_attach(sock: socket.socket) -> None:
        # this thread is inside the client's namespace here: its datagram (and the ARP before it) go out net1
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.sendto(b"x" * 10, ("192.168.200.1", 9))
        time.sleep(0.3)
        attach(sock)

    monkeypatch.setattr(dhcp_snoop, "_attach_filter", talk_then_attach)
    sock = packet_socket_in_netns(cli, "net1")
    sock.settimeout(1)
    with sock:
        with pytest.raises(TimeoutError):
            sock.recv(65535)
