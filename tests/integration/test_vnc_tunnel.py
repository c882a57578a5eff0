"""The VNC tunnel over a real nats-server, as the roles it runs as (a node's launcher, an admin's
CLI), to a fake VNC server on a local unix socket: bytes both ways, a large transfer intact, a close
on either side reaches the other, and a side whose peer vanished ends on its own."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from ctl.client import ApiClient
from ctl.vnc import open_tunnel
from launcher.vnc import VncServer
from proto import subjects
from proto.errors import ApiError, Code
from proto.vnc import Screenshot, VncOpened
from servicekit.tunnel import Flow
from servicekit.tunnelpump import StreamEnd
from tests.conftest import NatsServer
from tests.unit.test_png import decode_png_rgb

pytestmark = pytest.mark.integration
PPM = b"P6\n4 2\n255\n" + bytes(range(24))


@dataclass
class Rig:
    launcher_nc: Client
    api: ApiClient
    server: VncServer
    vnc_ends: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]
    vnc_closed: asyncio.Event
    serving: asyncio.Task[None]


@pytest.fixture
async def rig(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[Rig]:
    vnc_ends: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    closed = asyncio.Event()

    async def fake_vnc(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Echoes; a connection's end is noted."""
        vnc_ends.append((reader, writer))
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        closed.set()
        writer.close()

    sock = str(tmp_path / "vnc.sock")
    vnc = await asyncio.start_unix_server(fake_vnc, sock)
    launcher_nc = await nats.connect(nats_server.url, nkeys_seed=nats_server.creds("node-node1"),
                                     inbox_prefix=subjects.inbox_prefix("node", "node1"))

    async def screenshot() -> bytes:
        return PPM

    server = VncServer(launcher_nc, "node1", "testvm", sock, screenshot, idle_timeout_s=1.5)
    serving = asyncio.create_task(server.run())
    api = ApiClient(await nats.connect(nats_server.url, nkeys_seed=nats_server.creds("admin")))
    await asyncio.sleep(0.1)
    try:
        yield Rig(launcher_nc, api, server, vnc_ends, closed, serving)
    finally:
        serving.cancel()
        await api.close()
        if not launcher_nc.is_closed:
            await launcher_nc.close()
        vnc.close()


async def _viewer(rig: Rig, flow: Flow | None = None, api: ApiClient | None = None,
                  view_only: bool = False) -> tuple[socket.socket, asyncio.Task[str]]:
    """A viewer's socket, its other end in a tunnel session."""
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=theirs)
    session = asyncio.create_task(open_tunnel(api or rig.api, "node1", "testvm", StreamEnd(reader, writer), flow,
                                              view_only))
    ours.setblocking(False)
    return ours, session


async def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    loop = asyncio.get_running_loop()
    out = bytearray()
    while len(out) < n:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 10)
        if not chunk:
            break
        out += chunk
    return bytes(out)


async def test_bytes_both_ways_and_a_large_transfer_intact(rig: Rig) -> None:
    loop = asyncio.get_running_loop()
    sock, session = await _viewer(rig)
    await loop.sock_sendall(sock, b"RFB 003.008\n")
    assert await _recv_exactly(sock, 12) == b"RFB 003.008\n"
    blob = os.urandom(16 * 1024 * 1024)
    start = time.monotonic()
    sender = asyncio.create_task(loop.sock_sendall(sock, blob))
    echoed = await _recv_exactly(sock, len(blob))
    seconds = time.monotonic() - start
    await sender
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(blob).digest()
    print(f"\n16 MiB each way through the tunnel in {seconds:.2f}s: {2 * 16 / seconds:.1f} MiB/s")
    sock.close()  # the viewer leaves: the VNC server sees its connection end
    await asyncio.wait_for(rig.vnc_closed.wait(), 5)
    assert "closed" in await asyncio.wait_for(session, 5)
    await _until_no_sessions(rig)


async def test_the_vnc_server_closing_ends_the_viewers_connection(rig: Rig) -> None:
    sock, session = await _viewer(rig)
    await asyncio.get_running_loop().sock_sendall(sock, b"x")
    assert await _recv_exactly(sock, 1) == b"x"
    _, writer = rig.vnc_ends[0]
    writer.close()
    assert await _recv_exactly(sock, 1) == b""  # EOF at the viewer
    assert "peer closed" in await asyncio.wait_for(session, 5)
    sock.close()


async def test_a_launcher_that_stops_serving_says_so_at_once(rig: Rig) -> None:
    sock, session = await _viewer(rig)
    await asyncio.get_running_loop().sock_sendall(sock, b"x")
    assert await _recv_exactly(sock, 1) == b"x"
    rig.serving.cancel()  # the VM stopped: its launcher ends its sessions
    assert "peer closed" in await asyncio.wait_for(session, 3)  # not after the 15 s timeout
    assert await _recv_exactly(sock, 1) == b""
    sock.close()


async def test_a_vanished_peer_times_out_on_both_sides(rig: Rig) -> None:
    sock, session = await _viewer(rig, Flow(idle_timeout_s=1.5))
    await asyncio.get_running_loop().sock_sendall(sock, b"x")
    assert await _recv_exactly(sock, 1) == b"x"
    await rig.launcher_nc.close()  # the launcher is gone, without a word
    why = await asyncio.wait_for(session, 10)
    assert "silent" in why
    assert await _recv_exactly(sock, 1) == b""
    sock.close()


async def test_a_viewer_that_vanishes_is_timed_out_by_the_launcher(rig: Rig, nats_server: NatsServer) -> None:
    sock, session = await _viewer(rig)
    await asyncio.get_running_loop().sock_sendall(sock, b"x")
    assert await _recv_exactly(sock, 1) == b"x"
    await rig.api.nc.close()  # the CLI's connection dies mid-session: no close frame, no more keepalives
    session.cancel()
    sock.close()
    start = time.monotonic()
    await asyncio.wait_for(rig.vnc_closed.wait(), 10)  # the launcher let go of QEMU's socket
    assert time.monotonic() - start >= 1.0  # by its timeout (1.5 s here), not by a word from the viewer
    await _until_no_sessions(rig)


async def _until_no_sessions(rig: Rig) -> None:
    for _ in range(50):
        if not rig.server.sessions:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"sessions left open: {list(rig.server.sessions)}")


async def test_a_screenshot_and_a_bad_open(rig: Rig) -> None:
    shot = await rig.api.request(subjects.vnc_screenshot("node1", "testvm"), b"{}", Screenshot, "launcher", "")
    assert decode_png_rgb(shot.png) == (4, 2, bytes(range(24)))
    for body in (b'{"session": "../x"}', b"not json", b'{"session": "0123456789abcdef", "extra": 1}'):
        with pytest.raises(ApiError) as err:
            await rig.api.request(subjects.vnc_open("node1", "testvm"), body, VncOpened, "launcher", "")
        assert err.value.code in (Code.BAD_REQUEST, Code.INVALID)
    assert rig.server.sessions == {}


async def test_a_viewers_session_shows_the_screen_and_takes_out_its_input(rig: Rig, nats_server: NatsServer) -> None:
    viewer = await ApiClient.connect(nats_server.url, nats_server.creds("viewer"))
    try:
        ours, theirs = socket.socketpair()
        with pytest.raises(ApiError) as err:  # a full session is not a viewer's
            await open_tunnel(viewer, "node1", "testvm", StreamEnd(*await asyncio.open_connection(sock=theirs)))
        assert err.value.code is Code.FORBIDDEN
        ours.close()
        sock, session = await _viewer(rig, api=viewer, view_only=True)
        loop = asyncio.get_running_loop()
        update = struct.pack(">BBHHHH", 3, 0, 0, 0, 720, 400)
        key, pointer = struct.pack(">BBxxI", 4, 1, 0x61), struct.pack(">BBHH", 5, 1, 10, 10)
        await loop.sock_sendall(sock, b"RFB 003.008\n\x01\x00" + key + update + pointer + update)
        # the (echoing) VNC server got the handshake, shared, and the update requests only
        expected = b"RFB 003.008\n\x01\x01" + update + update
        assert await _recv_exactly(sock, len(expected)) == expected
        await loop.sock_sendall(sock, b"\x07junk")  # a message it cannot vouch for ends the session
        assert "refused" in await asyncio.wait_for(session, 5)
        sock.close()
    finally:
        await viewer.close()
