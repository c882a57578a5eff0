"""port-forward through a real nats-server into a real network namespace: the CLI's listener, the
node's handler end (handler.portforward, dialing in the namespace as it does on a node) and TCP and UDP
servers standing in for the guest at the VMI's pod address. Bytes go both ways intact, beyond the
tunnel's window, and a client's half-close reaches the guest; UDP datagrams cross whole, each client's
answers come back to it alone, and an idle flow's session ends on both sides; a closed port, a VMI of
another node and requests written by hand on the bus get typed errors."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import yaml

from ctl.client import ApiClient
from ctl.portforward import PortPair, forward
from handler.portforward import NetnsDialer, PortForwardServer
from proto import subjects
from proto.errors import ApiError, Code
from proto.manifest import parse_instance
from proto.state import VMI, Phase, VMIInterface
from proto.vnc import WINDOW
from servicekit.cancelling import cancel_and_wait
from servicekit.store import Store
from tests.conftest import REPO

pytestmark = pytest.mark.integration
POD_IP = "10.244.9.2"
ECHO = """
import hashlib, socket, threading
def serve(port, handle):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("{ip}", port)); s.listen(8)
    def accept():
        while True:
            threading.Thread(target=handle, args=(s.accept()[0],), daemon=True).start()
    threading.Thread(target=accept, daemon=True).start()
def echo(c):
    while data := c.recv(65536):
        c.sendall(data)
    c.close()
def digest(c):  # answers only once the client's stream ended: what it read, counted and hashed
    h, n = hashlib.sha256(), 0
    while data := c.recv(65536):
        h.update(data); n += len(data)
    c.sendall(f"{{n}} {{h.hexdigest()}}".encode()); c.close()
serve(7777, echo); serve(7779, digest)
def udp_echo():  # each datagram back to its sender, with who sent it (the client's address as seen here)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("{ip}", 7777))
    while True:
        data, peer = u.recvfrom(65536)
        u.sendto(data if data.startswith(b"big") else data + f" from {{peer[0]}}".encode(), peer)
threading.Thread(target=udp_echo, daemon=True).start()
print("listening", flush=True)
threading.Event().wait()
"""


@pytest.fixture
def guest(scratch_netns: str) -> Iterator[str]:
    """An echo server on POD_IP:7777 inside the namespace, as a guest's port would answer."""
    subprocess.run(["ip", "-n", scratch_netns, "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "-n", scratch_netns, "addr", "add", f"{POD_IP}/32", "dev", "lo"], check=True)
    proc = subprocess.Popen(["ip", "netns", "exec", scratch_netns, sys.executable, "-c", ECHO.format(ip=POD_IP)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "listening"
        yield scratch_netns
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def running(name: str, node: str) -> VMI:
    doc = yaml.safe_load((REPO / "examples" / "testvmi.yaml").read_text())
    doc["metadata"]["name"] = name
    spec = parse_instance(json.dumps(doc).encode())
    return VMI(name=name, uid=f"{name}-uid", spec=spec, created_at=time.time(), phase=Phase.RUNNING, node_name=node,
               interfaces=[VMIInterface(name="default", ip_address=POD_IP)])


async def test_a_guest_port_reached_through_the_bus(api: Store, nats_url: str, guest: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    await api.vmis.put("testvm", running("testvm", "node1"))
    await api.vmis.put("elsewhere", running("elsewhere", "node2"))

    async def vmis() -> list[VMI]:
        return [e.value for e in await api.vmis.items()]

    server = PortForwardServer(api.nc, "node1", vmis, NetnsDialer(guest))
    client = await ApiClient.connect(nats_url)
    announced: list[str] = []
    tasks = [asyncio.create_task(server.run()),
             asyncio.create_task(forward(client, "testvm", [PortPair(0, 7777), PortPair(0, 7778), PortPair(0, 7779)],
                                         "127.0.0.1",
                                         announced.append))]
    try:
        for _ in range(100):
            if len(announced) == 3:
                break
            await asyncio.sleep(0.05)
        ports = [int(line.split()[2].rsplit(":", 1)[1]) for line in announced]
        assert [line.split()[-1] for line in announced] == ["7777", "7778", "7779"]

        payload = os.urandom(4 * WINDOW + 12345)  # beyond the window: acknowledgements must flow
        reader, writer = await asyncio.open_connection("127.0.0.1", ports[0])

        async def send() -> None:
            for i in range(0, len(payload), 50_000):
                writer.write(payload[i:i + 50_000])
                await writer.drain()

        sending = asyncio.create_task(send())
        echoed = await asyncio.wait_for(reader.readexactly(len(payload)), 60)
        await sending
        assert echoed == payload
        writer.close()

        # a client that sends its request and shuts its sending half (nc -N, HTTP/1.0 clients): the
        # guest reads to its end, beyond the window, and the answer still comes back whole
        reader, writer = await asyncio.open_connection("127.0.0.1", ports[2])
        writer.write(payload)
        writer.write_eof()
        answer = await asyncio.wait_for(reader.read(), 60)
        assert answer.decode() == f"{len(payload)} {hashlib.sha256(payload).hexdigest()}"
        writer.close()

        # nothing listens on 7778 in the guest: the connection ends at once, the reason said
        reader, writer = await asyncio.open_connection("127.0.0.1", ports[1])
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        for _ in range(100):
            if "Unavailable" in capsys.readouterr().err:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the refused port was never said")

        # by hand on the bus: typed errors, and nothing opened
        async def ask(vmi: str, body: bytes) -> dict[str, object]:
            reply = json.loads((await api.nc.request(subjects.portforward_open("node1", vmi), body, timeout=5)).data)
            assert isinstance(reply, dict)
            error = reply.get("error")
            assert isinstance(error, dict), reply
            return error

        assert (await ask("testvm", b"{not json"))["code"] == "BadRequest"
        assert (await ask("testvm", b'{"session": "a", "port": 7777}'))["field"] == "session"
        assert (await ask("testvm", b'{"session": "' + b"a" * 16 + b'", "port": 7777, "x": 1}'))["code"] == \
            "BadRequest"
        assert (await ask("elsewhere", b'{"session": "' + b"b" * 16 + b'", "port": 7777}'))["code"] == "NotFound"
        assert (await ask("nothere", b'{"session": "' + b"c" * 16 + b'", "port": 7777}'))["code"] == "NotFound"
        assert not server.sessions
    finally:
        await cancel_and_wait(tasks)
        await client.close()


class UdpClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got.put_nowait(data)

    @classmethod
    async def to(cls, port: int) -> tuple[asyncio.DatagramTransport, UdpClient]:
        return await asyncio.get_running_loop().create_datagram_endpoint(cls, remote_addr=("127.0.0.1", port))


async def test_a_guests_udp_port_reached_through_the_bus(api: Store, nats_url: str, guest: str) -> None:
    await api.vmis.put("testvm", running("testvm", "node1"))

    async def vmis() -> list[VMI]:
        return [e.value for e in await api.vmis.items()]

    idle_s = 1.5
    server = PortForwardServer(api.nc, "node1", vmis, NetnsDialer(guest, udp_idle_s=idle_s))
    client = await ApiClient.connect(nats_url)
    announced: list[str] = []
    tasks = [asyncio.create_task(server.run()),
             asyncio.create_task(forward(client, "testvm", [PortPair(0, 7777, "UDP")], "127.0.0.1",
                                         announced.append, udp_idle_s=idle_s))]
    ends: list[asyncio.DatagramTransport] = []
    try:
        for _ in range(100):
            if announced:
                break
            await asyncio.sleep(0.05)
        assert announced[0].endswith("-> 7777/udp")
        port = int(announced[0].split()[2].rsplit(":", 1)[1])
        (one, first), (two, second) = await UdpClient.to(port), await UdpClient.to(port)
        ends += [one, two]
        # each datagram whole and alone; each client's answers to it, not to the other
        for i in range(3):
            one.sendto(f"one-{i}".encode())
            two.sendto(f"two-{i}".encode())
        big = b"big" + os.urandom(20_000)
        one.sendto(big)
        got_one = [await asyncio.wait_for(first.got.get(), 10) for _ in range(4)]
        got_two = [await asyncio.wait_for(second.got.get(), 10) for _ in range(3)]
        # the guest saw them come from inside the node's namespace (its one address here), not from this host
        assert got_one[:3] == [f"one-{i} from {POD_IP}".encode() for i in range(3)] and got_one[3] == big
        assert got_two == [f"two-{i} from {POD_IP}".encode() for i in range(3)]
        assert len(server.sessions) == 2  # a session per client address
        # nothing crosses for the idle time: both sessions end, on the node too
        for _ in range(int(idle_s * 40)):
            if not server.sessions:
                break
            await asyncio.sleep(0.1)
        assert not server.sessions
        # a client's next datagram opens a new session
        one.sendto(b"again")
        assert await asyncio.wait_for(first.got.get(), 10) == f"again from {POD_IP}".encode()
        assert len(server.sessions) == 1

        # by hand on the bus: a protocol it does not forward is refused, and nothing opened
        body = b'{"session": "' + b"d" * 16 + b'", "port": 7777, "protocol": "SCTP"}'
        reply = json.loads((await api.nc.request(subjects.portforward_open("node1", "testvm"), body, timeout=5)).data)
        assert reply["error"]["field"] == "protocol"
        assert len(server.sessions) == 1
    finally:
        for end in ends:
            end.close()
        await cancel_and_wait(tasks)
        await client.close()


async def test_a_port_it_cannot_listen_on_closes_the_ones_opened_before_it(api: Store, nats_url: str) -> None:
    """Found in a reread: port-forward with several ports, the second taken, left the first listening
    until the process exited. Now the refusal leaves none."""
    await api.vmis.put("testvm", running("testvm", "node1"))
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    first = probe.getsockname()[1]
    probe.close()  # a port free a moment ago, for the first pair
    client = await ApiClient.connect(nats_url)
    announced: list[str] = []
    try:
        with pytest.raises(ApiError) as caught:
            await forward(client, "testvm", [PortPair(first, 7777), PortPair(taken.getsockname()[1], 7778)],
                          "127.0.0.1", announced.append)
        assert caught.value.code is Code.INVALID and "cannot listen" in caught.value.message
        assert announced == [f"Forwarding from 127.0.0.1:{first} -> 7777"]  # it was open, and is no more
        again = socket.socket()
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", first))
        again.listen(1)  # free again: nobody listens there
        again.close()
    finally:
        taken.close()
        await client.close()
