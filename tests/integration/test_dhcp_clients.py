"""The launcher's DHCP server against real clients: busybox udhcpc (what the test guest runs) and
Debian's dhclient, each in a namespace of its own joined to the server's by a veth."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from launcher.dhcp_packet import Lease
from launcher.dhcp_server import serve_dhcp_in_netns

pytestmark = pytest.mark.integration
SCRIPT = "#!/bin/sh\nenv > \"$0.$1\"\n"  # each event's variables to <script>.<event>


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout


@dataclass
class Pair:
    server_ns: str
    client_ns: str
    client_mac: str
    tmp: Path


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    tag = secrets.token_hex(3)
    srv, cli = f"vbdhcp-s{tag}", f"vbdhcp-c{tag}"
    try:
        ip("netns", "add", srv)
        ip("netns", "add", cli)
        ip("-n", srv, "link", "add", "s0", "type", "veth", "peer", "name", "c0", "netns", cli)
        ip("-n", srv, "addr", "add", "10.0.2.1/24", "dev", "s0")
        ip("-n", srv, "link", "set", "s0", "up")
        ip("-n", cli, "link", "set", "c0", "up")
        mac = ip("-n", cli, "-o", "link", "show", "c0").split("link/ether ")[1].split()[0]
        yield Pair(srv, cli, mac, tmp_path)
    finally:
        for ns in (srv, cli):
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, check=False)


def lease_for(mac: str) -> Lease:
    return Lease(mac=mac, ip=IPv4Address("10.0.2.2"), prefix=24, router=IPv4Address("10.0.2.1"),
                 dns=[IPv4Address("10.0.2.1")], mtu=1400, routes=[], hostname="vmx", lease_seconds=3600,
                 server_id=IPv4Address("10.0.2.1"), domain=None)


def env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


async def serving(pair: Pair, lease: Lease) -> tuple[asyncio.Task[None], asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(serve_dhcp_in_netns(pair.server_ns, lease, "s0", stop))
    await asyncio.sleep(0.2)
    return task, stop


async def run(*cmd: str, limit: float = 20) -> int:
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.DEVNULL)
    try:
        return await asyncio.wait_for(proc.wait(), limit)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise


async def test_busybox_udhcpc_gets_exactly_the_lease(pair: Pair) -> None:
    script = pair.tmp / "udhcpc.sh"
    script.write_text(SCRIPT)
    script.chmod(0o755)
    task, stop = await serving(pair, lease_for(pair.client_mac))
    try:
        code = await run("ip", "netns", "exec", pair.client_ns, "busybox", "udhcpc", "-i", "c0", "-n", "-q", "-f",
                         "-t", "3", "-T", "1", "-O", "mtu", "-s", str(script))
    finally:
        stop.set()
        await task
    assert code == 0
    got = env(Path(f"{script}.bound"))
    assert (got["ip"], got["subnet"], got["router"], got["dns"].strip(), got["mtu"], got["hostname"]) == (
        "10.0.2.2", "255.255.255.0", "10.0.2.1", "10.0.2.1", "1400", "vmx")


async def test_debian_dhclient_gets_exactly_the_lease(pair: Pair) -> None:
    script = pair.tmp / "dhclient.sh"
    script.write_text("#!/bin/sh\nenv > \"$0.$reason\"\n")
    script.chmod(0o755)
    task, stop = await serving(pair, lease_for(pair.client_mac))
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", pair.client_ns, "dhclient", "-1", "-d", "-sf", str(script),
        "-lf", str(pair.tmp / "leases"), "-pf", str(pair.tmp / "dhclient.pid"), "c0",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        bound = Path(f"{script}.BOUND")
        for _ in range(200):
            if bound.exists() and "new_ip_address" in bound.read_text():
                break
            await asyncio.sleep(0.1)
    finally:
        proc.terminate()
        await proc.wait()
        stop.set()
        await task
    got = env(Path(f"{script}.BOUND"))
    assert (got["new_ip_address"], got["new_subnet_mask"], got["new_routers"], got["new_interface_mtu"]) == (
        "10.0.2.2", "255.255.255.0", "10.0.2.1", "1400")


async def test_another_mac_gets_no_answer(pair: Pair) -> None:
    script = pair.tmp / "udhcpc.sh"
    script.write_text(SCRIPT)
    script.chmod(0o755)
    task, stop = await serving(pair, lease_for("02:00:00:00:00:99"))  # the VM's MAC is another one
    try:
        code = await run("ip", "netns", "exec", pair.client_ns, "busybox", "udhcpc", "-i", "c0", "-n", "-q", "-f",
                         "-t", "2", "-T", "1", "-s", str(script))
    finally:
        stop.set()
        await task
    assert code != 0 and not Path(f"{script}.bound").exists()
