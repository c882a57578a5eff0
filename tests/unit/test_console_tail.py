"""The console's publisher outlives failed publishes: nothing lost, nothing sent twice."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from launcher.console import CHUNK, ConsoleTail
from proto.console import RUN_HEADER


class FlakyJetStream:
    """A stateful fake of the publish it needs: fails the given calls, as a stopped NATS does."""

    def __init__(self, fail_calls: set[int]) -> None:
        self.fail_calls = fail_calls
        self.calls = 0
        self.stored: list[tuple[str, bytes, dict[str, str]]] = []

    async def publish(self, subject: str, payload: bytes, *, stream: str, headers: dict[str, str]) -> None:
        self.calls += 1
        if self.calls in self.fail_calls:
            raise TimeoutError("nats: timeout")
        self.stored.append((subject, payload, headers))


async def test_a_failed_publish_is_sent_again_once(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    data = bytes(range(256)) * ((CHUNK * 3) // 256 + 1)
    log.write_bytes(data)
    js = FlakyJetStream(fail_calls={2})  # the second chunk's first try fails
    tail = ConsoleTail(js, "node1", "testvm", "uid-1", log)  # type: ignore[arg-type]
    with pytest.raises(TimeoutError):
        await tail.pump()
    assert tail.offset == CHUNK  # the first chunk is stored, the rest is not yet
    await tail.pump()
    assert b"".join(p for _, p, _ in js.stored) == data
    assert {s for s, _, _ in js.stored} == {"virtbus.console.node1.testvm.out"}
    assert all(h == {RUN_HEADER: "uid-1"} for _, _, h in js.stored)


async def test_the_publisher_keeps_going(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(b"boot\n")
    js = FlakyJetStream(fail_calls={1, 2})
    tail = ConsoleTail(js, "node1", "testvm", "uid-1", log)  # type: ignore[arg-type]
    task: asyncio.Task[Any] = asyncio.create_task(tail.run(interval=0.01, retry=0.01))
    try:
        for _ in range(400):
            if js.stored:
                break
            await asyncio.sleep(0.01)
        with log.open("ab") as f:
            f.write(b"VIRTBUS-GUEST-READY\n")
        for _ in range(400):
            if b"".join(p for _, p, _ in js.stored) == b"boot\nVIRTBUS-GUEST-READY\n":
                break
            await asyncio.sleep(0.01)
        assert b"".join(p for _, p, _ in js.stored) == b"boot\nVIRTBUS-GUEST-READY\n"
        assert not task.done()
    finally:
        task.cancel()


async def test_output_is_published_when_the_guest_prints_not_on_a_poll(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(b"")
    js = FlakyJetStream(fail_calls=set())
    tail = ConsoleTail(js, "node1", "testvm", "uid-1", log)  # type: ignore[arg-type]
    task: asyncio.Task[Any] = asyncio.create_task(tail.run(interval=3600, settle=0.0))  # no polling to speak of
    try:
        await asyncio.sleep(0.05)
        with log.open("ab") as f:
            f.write(b"login: ")
        assert js.stored == []  # nothing polls the file
        tail.wake.set()  # as ConsoleInput does when the serial port speaks
        for _ in range(200):
            if js.stored:
                break
            await asyncio.sleep(0.01)
        assert [p for _, p, _ in js.stored] == [b"login: "]
    finally:
        task.cancel()


class CountingTail(ConsoleTail):
    """Counts its looks at the log file."""

    looks = 0

    async def pump(self) -> int:
        self.looks += 1
        return await super().pump()


async def test_an_idle_console_stops_looking_once_the_socket_is_read(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(b"boot\n")
    js = FlakyJetStream(fail_calls=set())
    tail = CountingTail(js, "node1", "testvm", "uid-1", log)  # type: ignore[arg-type]
    task: asyncio.Task[Any] = asyncio.create_task(tail.run(interval=0.02, settle=0.0))
    try:
        await asyncio.sleep(0.2)
        assert tail.looks > 3  # nobody reads the socket yet: output may come unannounced, so it looks
        tail.listening(True)  # as ConsoleInput does once it reads the serial socket
        await asyncio.sleep(0.2)
        looks = tail.looks
        await asyncio.sleep(0.3)
        assert tail.looks == looks  # idle: no look at all
        with log.open("ab") as f:
            f.write(b"login: ")
        tail.wake.set()  # the guest spoke
        for _ in range(200):
            if b"".join(p for _, p, _ in js.stored) == b"boot\nlogin: ":
                break
            await asyncio.sleep(0.01)
        assert b"".join(p for _, p, _ in js.stored) == b"boot\nlogin: "
    finally:
        task.cancel()
