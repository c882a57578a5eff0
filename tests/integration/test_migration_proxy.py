"""The launchers' migration proxies (launcher.migrationproxy) on real sockets: what goes into a source's
unix socket comes out of the target's channel socket and back, through a TCP port of the target's; a
connection that does not start with the token reaches nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from launcher.migrationproxy import DISKS, LIBVIRT, MEMORY, SourceProxies, TargetListener, new_token
from launcher.migrationtls import client_context, make_identity

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


async def test_over_tls_only_the_source_trusting_the_targets_certificate_gets_through(tmp_path: Path) -> None:
    """launcher.migrationtls: what crosses the node network is encrypted, and a source reaches only the
    target whose certificate it was given; a client in the clear gets nowhere, token or not."""
    token = new_token()
    identity = make_identity(tmp_path / "tls")
    seen: list[bytes] = []
    target_sockets = {LIBVIRT: tmp_path / "target-L.sock"}
    server = await echo_server(target_sockets[LIBVIRT], seen)
    listener = TargetListener(token, target_sockets, tls=identity.context)
    port = await listener.start(None, host="127.0.0.1")
    wire: list[bytes] = []  # what a tap on the node network sees: a relay between the source and the target

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                wire.append(data)
                dst.write(data)
                await dst.drain()
            dst.close()
        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer), return_exceptions=True)

    tap = await asyncio.start_server(relay, "127.0.0.1", 0)
    tap_port = tap.sockets[0].getsockname()[1]
    try:
        secret = b"guest memory: the quick brown fox " * 1000
        sockets = {LIBVIRT: tmp_path / "source" / "L.sock"}
        async with SourceProxies("127.0.0.1", tap_port, token, netns=None, sockets=sockets,
                                 tls=client_context(identity.certificate)):
            reader, writer = await asyncio.open_unix_connection(str(sockets[LIBVIRT]))
            writer.write(secret)
            await writer.drain()
            assert await reader.readexactly(len(secret)) == secret.upper()
            writer.close()
        assert b"".join(seen) == secret
        tapped = b"".join(wire)
        assert len(tapped) > len(secret) and b"quick brown fox" not in tapped and token.encode() not in tapped

        # another target's certificate: the source refuses this one, nothing reaches the channel
        other = make_identity(tmp_path / "other")
        sockets = {LIBVIRT: tmp_path / "source2" / "L.sock"}
        async with SourceProxies("127.0.0.1", port, token, netns=None, sockets=sockets,
                                 tls=client_context(other.certificate)):
            reader, writer = await asyncio.open_unix_connection(str(sockets[LIBVIRT]))
            writer.write(b"hello")
            assert await asyncio.wait_for(reader.read(), 10) == b""
            writer.close()
        # in the clear, with the right token: the TLS handshake fails, nothing gets in
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(token.encode() + LIBVIRT + b"hello")
        assert await asyncio.wait_for(reader.read(), 15) == b""
        writer.close()
        assert b"".join(seen) == secret  # nothing more reached the target's socket
    finally:
        tap.close()
        await listener.close()
        server.close()
