"""A UDP flow as a tunnel's local end (servicekit.tunnelpump.LocalEnd), for port-forward's UDP
sessions (proto.portforward): each datagram read is one frame, and each frame written out is one
datagram, so datagrams cross whole and alone.

UDP has no end: a flow that no datagram crossed, either way, for ``idle_s`` reads as closed, and the
session ends. Datagrams the tunnel cannot carry are dropped and counted, as a full socket buffer
drops them: an empty one (an empty frame is an acknowledgement), and one larger than the room the
window has left or than a frame (proto.vnc.CHUNK).

Two ends: a connected socket's (the node's handler, towards the guest) and a queue's (the CLI,
whose one listening socket serves many client addresses and hands each its own datagrams).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

QUEUED = 256  # datagrams held for a flow whose session is not reading (opening, or its window full)


class DatagramEnd:
    """The idle timeout and the drops; a subclass receives and sends."""

    def __init__(self, idle_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_s, self.clock = idle_s, clock
        self.last = clock()
        self.dropped = 0

    async def _receive(self) -> bytes:
        raise NotImplementedError

    async def _send(self, data: bytes) -> None:
        raise NotImplementedError

    async def read(self, n: int) -> bytes:
        """The next datagram of at most n bytes; b"" once the flow was idle for idle_s."""
        while True:
            left = self.last + self.idle_s - self.clock()
            if left <= 0:
                return b""
            try:
                data = await asyncio.wait_for(self._receive(), left)
            except TimeoutError:
                continue  # a datagram sent meanwhile (write) kept the flow alive: look again
            self.last = self.clock()
            if 0 < len(data) <= n:
                return data
            self.dropped += 1

    async def write(self, data: bytes) -> None:
        self.last = self.clock()
        await self._send(data)

    async def close(self) -> None:
        pass


class SocketDatagramEnd(DatagramEnd):
    """A connected UDP socket's end: what its peer sends, and sends to its peer."""

    def __init__(self, sock: socket.socket, idle_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(idle_s, clock)
        sock.setblocking(False)
        self.sock = sock

    async def _receive(self) -> bytes:
        while True:
            try:
                return await asyncio.get_running_loop().sock_recv(self.sock, 65536)
            except ConnectionRefusedError:
                # an earlier datagram met a closed port (ICMP): it is lost, as it would be without us
                self.dropped += 1

    async def _send(self, data: bytes) -> None:
        try:
            await asyncio.get_running_loop().sock_sendall(self.sock, data)
        except OSError:  # refused (an earlier datagram's ICMP), too large, no route: this one is lost
            self.dropped += 1

    async def close(self) -> None:
        self.sock.close()


class QueueDatagramEnd(DatagramEnd):
    """One client address of a shared listening socket: its datagrams delivered here by whoever reads
    that socket, and what is written sent back to it."""

    def __init__(self, send: Callable[[bytes], None], idle_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(idle_s, clock)
        self.send = send
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUED)

    def deliver(self, data: bytes) -> None:
        try:
            self.queue.put_nowait(data)
        except asyncio.QueueFull:
            self.dropped += 1

    async def _receive(self) -> bytes:
        return await self.queue.get()

    async def _send(self, data: bytes) -> None:
        self.send(data)
