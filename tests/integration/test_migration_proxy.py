"""The launchers' migration proxies (launcher.migrationproxy) on real sockets: what goes into a source's
unix socket comes out of the target's channel socket and back, through a TCP port of the target's; a
connection that does not start with the token reaches nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from launcher.migrationproxy import DISKS, LIBVIRT, MEMORY, SourceProxies, TargetListener, new_token

pytestmark = pytest.mark.integration


async def echo_server(path: Path, seen: list[bytes]) -> asyncio.Server:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            seen.append(data)
            writer.write(data.upper())
            await writer.drain()
        writer.close()
    return await asyncio.start_unix_server(echo, str(path))


async def test_each_channel_reaches_its_socket_on_the_target_and_nothing_else_gets_in(tmp_path: Path) -> None:
    token = new_token()
    seen: dict[bytes, list[bytes]] = {c: [] for c in (LIBVIRT, MEMORY, DISKS)}
    target_sockets = {c: tmp_path / f"target-{c.decode()}.sock" for c in seen}
    servers = [await echo_server(target_sockets[c], seen[c]) for c in seen]
    listener = TargetListener(token, target_sockets)
    port = await listener.start(None, host="127.0.0.1")
    source_sockets = {c: tmp_path / "source" / f"{c.decode()}.sock" for c in seen}
    try:
        async with SourceProxies("127.0.0.1", port, token, netns=None, sockets=source_sockets):
            for channel in seen:
                reader, writer = await asyncio.open_unix_connection(str(source_sockets[channel]))
                payload = channel * 300_000  # more than one chunk each way
                writer.write(payload)
                await writer.drain()
                got = await reader.readexactly(len(payload))
                assert got == payload.upper()
                writer.close()
            # anyone else on the node network: no token, no channel
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: example.org\r\n\r\n")
            await writer.drain()
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed unanswered
            writer.close()
            wrong = new_token()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(wrong.encode() + LIBVIRT + b"hello")
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
            assert listener.refused == 2
            assert all(b"".join(seen[c]) == c * 300_000 for c in seen)  # each channel got only its own bytes

            # the guest has arrived: no new connection, but the source's open one goes on (its libvirtd
            # confirms the move over it) until it ends it
            reader, writer = await asyncio.open_unix_connection(str(source_sockets[LIBVIRT]))
            writer.write(b"before")
            assert await reader.readexactly(6) == b"BEFORE"
            listener.stop_accepting()
            writer.write(b"after")
            assert await reader.readexactly(5) == b"AFTER"
            late_reader, late_writer = await asyncio.open_unix_connection(str(source_sockets[MEMORY]))
            late_writer.write(b"late")
            assert await asyncio.wait_for(late_reader.read(), 10) == b""  # the target no longer listens
            late_writer.close()
            writer.close()
        assert not any(p.exists() for p in source_sockets.values())  # the source's sockets go with it
    finally:
        await listener.close()
        for server in servers:
            server.close()
