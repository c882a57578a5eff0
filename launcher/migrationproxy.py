"""The two launchers' ends of a live migration's connections (KubeVirt's migration proxy, which its
virt-handlers run): libvirt's peer-to-peer migration and QEMU's streams go over unix sockets in each
launcher's private /run/libvirt, and these carry them between the nodes over TCP.

- The target's launcher listens on a port of its node (``TargetListener``). Each connection must
  first send the migration's token and the channel it is for; anything else is closed unanswered. The
  channels are its libvirtd's socket (the source's libvirtd drives the migration through it), and the
  sockets its QEMU listens on for the guest's memory and for its disks (NBD).
- The source's launcher offers the same channels as unix sockets in its own /run/libvirt
  (``SourceProxies``), each connection forwarded to the target with the token first. libvirt names a
  socket by path on both sides, which the two private mount namespaces make possible.

The token is what keeps anyone else on the node network (a guest, say) from the target's libvirtd:
16 random bytes, given to the source node's launcher only (launcher.migrationtoken).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import secrets
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import structlog

from servicekit import netns_socket

log = structlog.get_logger()
MIGRATION_DIR = Path("/run/libvirt/virtbus-migration")  # in each launcher's private mounts
# channel byte -> the socket it reaches, on both sides
LIBVIRT = b"L"
MEMORY = b"M"
DISKS = b"D"
SOURCE_SOCKETS = {LIBVIRT: MIGRATION_DIR / "libvirt.sock", MEMORY: MIGRATION_DIR / "memory.sock",
                  DISKS: MIGRATION_DIR / "disks.sock"}
HANDSHAKE_S = 10.0
CLOSE_GRACE_S = 30.0  # what the source's connections get to end by themselves once the guest has arrived
CHUNK = 256 * 1024


def new_token() -> str:
    return secrets.token_hex(16)


def handshake(token: str, channel: bytes) -> bytes:
    """What a source's connection sends first (pure)."""
    return token.encode() + channel


def channel_of(first: bytes, token: str) -> bytes | None:
    """The channel a connection's first bytes ask for, None unless they carry the token (pure;
    compared in constant time)."""
    expected = token.encode()
    if len(first) != len(expected) + 1 or not hmac.compare_digest(first[:-1], expected):
        return None
    channel = first[-1:]
    return channel if channel in SOURCE_SOCKETS else None


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until the reader's end, then end the writer's side (the other direction goes on)."""
    try:
        while chunk := await reader.read(CHUNK):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()


async def splice(a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                 b: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
    """Both directions until both have ended; then both connections are closed."""
    try:
        await asyncio.gather(pump(a[0], b[1]), pump(b[0], a[1]))
    finally:
        for _, writer in (a, b):
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()


class Connections:
    """The connections a proxy has open, each its task: tracked while it runs, ended at the close."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()

    @contextlib.contextmanager
    def tracked(self) -> Iterator[None]:
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        try:
            yield
        finally:
            if task is not None:
                self.tasks.discard(task)

    async def end(self, grace: float = 0.0) -> None:
        """Let them end by themselves for ``grace`` seconds, then cancel what is left."""
        if self.tasks and grace > 0:
            await asyncio.wait(list(self.tasks), timeout=grace)
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=5.0)


class TargetListener:
    """The target's port: each connection proven by the token, then spliced to its channel's socket."""

    def __init__(self, token: str, sockets: dict[bytes, Path], tls: ssl.SSLContext | None = None) -> None:
        self.token = token
        self.sockets = sockets
        self.tls = tls  # launcher.migrationtls: the token and all after it go encrypted
        self.server: asyncio.Server | None = None
        self.connections = Connections()
        self.refused = 0

    async def start(self, netns: str | None, host: str = "0.0.0.0", port: int = 0) -> int:
        """Listen in the node's network namespace (None: this one); returns the port."""
        def bound() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(8)
            sock.setblocking(False)
            return sock

        sock = await asyncio.to_thread(netns_socket.socket_in, netns, bound)
        self.server = await asyncio.start_server(self._accepted, sock=sock, ssl=self.tls,
                                                 ssl_handshake_timeout=HANDSHAKE_S if self.tls else None)
        return int(sock.getsockname()[1])

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self.connections.tracked():
            try:
                first = await asyncio.wait_for(reader.readexactly(len(self.token) + 1), HANDSHAKE_S)
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                first = b""
            channel = channel_of(first, self.token)
            if channel is None:
                self.refused += 1
                log.warning("migration connection refused: no token", peer=str(writer.get_extra_info("peername")))
                writer.close()
                return
            try:
                inner = await asyncio.open_unix_connection(str(self.sockets[channel]))
            except OSError as exc:
                log.warning("migration channel unreachable", channel=channel.decode(), error=str(exc))
                writer.close()
                return
            await splice((reader, writer), inner)

    def stop_accepting(self) -> None:
        """No new connection; the ones open go on (the source's libvirtd still confirms the move
        over its own after the guest runs here: cut, its side would take the move for failed)."""
        if self.server is not None:
            self.server.close()
            self.server = None

    async def close(self, grace: float = CLOSE_GRACE_S) -> None:
        """Stop accepting, let the open connections end by themselves for ``grace`` seconds, then end them."""
        self.stop_accepting()
        await self.connections.end(grace)


class SourceProxies:
    """The source's sockets, each connection forwarded to the target with the token first."""

    def __init__(self, address: str, port: int, token: str, *, netns: str | None,
                 sockets: dict[bytes, Path] | None = None, tls: ssl.SSLContext | None = None) -> None:
        """netns: the node's network namespace, where the target's node is reached (None: this one);
        tls: the context that trusts the target's certificate only (launcher.migrationtls)."""
        self.netns = netns
        self.tls = tls
        self.address = address
        self.port = port
        self.token = token
        self.sockets = sockets or SOURCE_SOCKETS
        self.servers: list[asyncio.Server] = []
        self.connections = Connections()

    async def __aenter__(self) -> SourceProxies:
        for channel, path in self.sockets.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.unlink(missing_ok=True)
            self.servers.append(await asyncio.start_unix_server(functools.partial(self._accepted, channel), str(path)))
        return self

    async def _accepted(self, channel: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self.connections.tracked():
            try:
                remote = await asyncio.wait_for(self._connect(), HANDSHAKE_S)
            except (OSError, TimeoutError) as exc:
                log.warning("migration target unreachable", channel=channel.decode(), error=str(exc) or "timeout")
                writer.close()
                return
            remote[1].write(handshake(self.token, channel))
            await splice((reader, writer), remote)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        def made() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            return sock

        sock = await asyncio.to_thread(netns_socket.socket_in, self.netns, made)
        try:
            await asyncio.get_running_loop().sock_connect(sock, (self.address, self.port))
        except BaseException:
            sock.close()
            raise
        if self.tls is None:
            return await asyncio.open_connection(sock=sock)
        return await asyncio.open_connection(sock=sock, ssl=self.tls, server_hostname="",
                                             ssl_handshake_timeout=HANDSHAKE_S)

    async def __aexit__(self, *exc: object) -> None:
        for server in self.servers:
            server.close()
        await self.connections.end()
        for path in self.sockets.values():
            path.unlink(missing_ok=True)
