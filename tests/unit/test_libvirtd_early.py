"""A launcher starts its libvirtd early, in a thread, and connects later; a launch that ends first
(or is cancelled while libvirtd starts) still finds libvirtd's pid to stop it."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import libvirt
import pytest

from launcher import libvirtd as libvirtd_module
from launcher.libvirtd import LibvirtdError, PrivateLibvirtd


class SlowSpawn:
    """Stands in for PrivateLibvirtd._spawn: takes a while, then says libvirtd's pid (or fails)."""

    def __init__(self, lv: PrivateLibvirtd, seconds: float, fail: bool = False) -> None:
        self.lv, self.seconds, self.fail = lv, seconds, fail
        self.calls = 0
        self.done = threading.Event()

    def __call__(self, netns: str | None, workdir: Path, timeout: float) -> None:
        self.calls += 1
        time.sleep(self.seconds)
        self.done.set()
        if self.fail:
            raise LibvirtdError("libvirtd gave no socket")
        self.lv.pid = 4242


class Connection:
    def __init__(self, uri: str, steps: list[str]) -> None:
        self.uri, self.steps = uri, steps

    def getVersion(self) -> int:  # noqa: N802 - libvirt's name
        self.steps.append("capabilities looked up")
        return 7_002_000


@pytest.fixture
def steps(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the start did after the spawn, in order."""
    done: list[str] = []
    monkeypatch.setattr(libvirtd_module, "widen", lambda pid, cpus: done.append(f"widened {pid}"))
    return done


@pytest.fixture
def lv(monkeypatch: pytest.MonkeyPatch, steps: list[str]) -> PrivateLibvirtd:
    monkeypatch.setattr(libvirtd_module, "_event_loop_registered", True)  # no libvirtaio in a unit test
    monkeypatch.setattr(libvirt, "open", lambda uri: Connection(uri, steps))
    return PrivateLibvirtd(huge_pages=False)


def test_started_early_then_connected_once(lv: PrivateLibvirtd, tmp_path: Path, steps: list[str]) -> None:
    spawn = SlowSpawn(lv, 0.05)
    lv._spawn = spawn  # type: ignore[method-assign]

    async def launch() -> Any:
        lv.begin("pod", tmp_path)
        await asyncio.sleep(0)  # the launcher's other work meanwhile
        await lv.start("pod", tmp_path)
        assert steps == []  # no lookup (it may probe QEMU) before the launcher reaps orphans
        await lv.spread()
        return lv.conn

    conn = asyncio.run(launch())
    assert isinstance(conn, Connection) and conn.uri == "qemu:///system"
    assert spawn.calls == 1 and lv.pid == 4242
    # QEMU's capabilities checked while libvirtd is on the CPU it started on, and only then all of them
    assert steps == ["capabilities looked up", "widened 4242"]


def test_a_launch_ended_early_waits_for_the_pid(lv: PrivateLibvirtd, tmp_path: Path) -> None:
    spawn = SlowSpawn(lv, 0.1)
    lv._spawn = spawn  # type: ignore[method-assign]

    async def launch() -> None:
        lv.begin("pod", tmp_path)
        await lv.settle()  # the instance was gone: nothing to run, libvirtd to stop

    asyncio.run(launch())
    assert spawn.done.is_set() and lv.pid == 4242 and lv.conn is None


def test_cancelled_while_libvirtd_starts(lv: PrivateLibvirtd, tmp_path: Path) -> None:
    spawn = SlowSpawn(lv, 0.1)
    lv._spawn = spawn  # type: ignore[method-assign]

    async def launch() -> None:
        task = asyncio.create_task(lv.start("pod", tmp_path))
        await asyncio.sleep(0.01)
        task.cancel()  # SIGTERM while booting
        with pytest.raises(asyncio.CancelledError):
            await task
        await lv.settle()  # the launcher's clean-up

    asyncio.run(launch())
    assert spawn.done.is_set() and lv.pid == 4242


def test_a_libvirtd_that_will_not_start_fails_the_start_and_not_the_cleanup(lv: PrivateLibvirtd,
                                                                          tmp_path: Path) -> None:
    lv._spawn = SlowSpawn(lv, 0.01, fail=True)  # type: ignore[method-assign]

    async def launch() -> None:
        lv.begin("pod", tmp_path)
        with pytest.raises(LibvirtdError):
            await lv.start("pod", tmp_path)
        await lv.settle()

    asyncio.run(launch())
    assert lv.pid is None
