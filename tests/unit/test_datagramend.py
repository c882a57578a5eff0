"""A UDP flow as a tunnel's end: datagrams read whole and alone, the ones a frame cannot carry dropped
and counted, and a flow that idles either way read as ended; a real socket pair for the socket's end."""

from __future__ import annotations

import asyncio
import socket
import time

from servicekit.datagramend import QUEUED, QueueDatagramEnd, SocketDatagramEnd


async def test_datagrams_are_read_whole_and_the_unfit_ones_dropped() -> None:
    sent: list[bytes] = []
    end = QueueDatagramEnd(sent.append, idle_s=5)
    for data in (b"one", b"", b"x" * 100, b"two"):
        end.deliver(data)
    assert await end.read(50) == b"one"
    assert await end.read(50) == b"two"  # the empty one and the one beyond the room are gone
    assert end.dropped == 2
    await end.write(b"back")
    assert sent == [b"back"]


async def test_a_flow_ends_once_no_datagram_crossed_for_its_idle_time() -> None:
    end = QueueDatagramEnd(lambda _: None, idle_s=0.3)
    start = time.monotonic()

    async def keep_writing() -> None:  # the guest's side talks: the flow lives on
        for _ in range(4):
            await asyncio.sleep(0.15)
            await end.write(b"ping")

    writer = asyncio.create_task(keep_writing())
    assert await asyncio.wait_for(end.read(100), 5) == b""
    await writer
    took = time.monotonic() - start
    assert 0.6 + 0.3 - 0.05 <= took < 3  # idle only after the last write, not 0.3 s after the start


async def test_a_quiet_clients_queue_holds_what_it_may_and_counts_the_rest() -> None:
    end = QueueDatagramEnd(lambda _: None, idle_s=5)
    for i in range(QUEUED + 3):
        end.deliver(str(i).encode())
    assert end.dropped == 3
    assert await end.read(10) == b"0"


async def test_a_connected_socket_end_against_a_real_peer() -> None:
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(5)
    mine = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    mine.connect(peer.getsockname())
    end = SocketDatagramEnd(mine, idle_s=0.5)
    try:
        await end.write(b"hello")
        data, back = peer.recvfrom(100)
        assert data == b"hello"
        peer.sendto(b"a" * 10, back)
        peer.sendto(b"b" * 2000, back)  # beyond what the reader has room for: dropped
        peer.sendto(b"c", back)
        assert await end.read(1500) == b"a" * 10
        assert await end.read(1500) == b"c"
        assert end.dropped == 1
        assert await asyncio.wait_for(end.read(1500), 5) == b""  # idle for 0.5 s
    finally:
        await end.close()
        peer.close()
    assert mine.fileno() == -1
