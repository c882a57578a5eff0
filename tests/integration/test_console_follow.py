"""`virtbus console NAME --log --until TEXT` against a real nats-server: the console stream read by
one consumer as the launcher publishes it (ctl.consolelog.follow)."""

from __future__ import annotations

import asyncio
import time

import pytest

from ctl.client import ApiClient
from ctl.consolelog import follow
from proto import subjects
from proto.console import RUN_HEADER
from proto.errors import ApiError, Code
from servicekit.store import Store

VM = "testvm"


async def publish(api: ApiClient, run: str, data: bytes) -> None:
    await api.nc.jetstream().publish(subjects.console_out("node1", VM), data, headers={RUN_HEADER: run})


async def test_prints_the_current_run_as_it_comes_until_the_text(nats_url: str, store: Store) -> None:
    api = await ApiClient.connect(nats_url)
    try:
        await publish(api, "run1", b"old boot\nVIRTBUS-GUEST-READY\n")  # an earlier run's marker
        await publish(api, "run2", b"booting\n")
        current = {"run": "run2"}
        asked: list[str] = []

        async def run_of(_api: ApiClient, name: str) -> str | None:
            asked.append(name)
            return current["run"]

        out = bytearray()
        waiting = asyncio.create_task(follow(api, VM, "VIRTBUS-GUEST-READY", 30, out.extend, run_of))
        await asyncio.sleep(0.5)
        assert not waiting.done()  # the earlier run's marker does not count
        assert bytes(out) == b"booting\n"
        await publish(api, "run2", b"VIRTBUS-GUEST-READY\n")
        await asyncio.wait_for(waiting, 5)
        assert bytes(out) == b"booting\nVIRTBUS-GUEST-READY\n"
        assert asked == [VM, VM]  # once at the start, once for the unknown run1
    finally:
        await api.nc.close()


async def test_a_restart_while_waiting_is_followed(nats_url: str, store: Store) -> None:
    api = await ApiClient.connect(nats_url)
    try:
        current = {"run": "r1"}

        async def run_of(_api: ApiClient, _name: str) -> str | None:
            return current["run"]

        out = bytearray()
        waiting = asyncio.create_task(follow(api, VM, "READY", 30, out.extend, run_of))
        await publish(api, "r1", b"r1 crashed\n")
        await asyncio.sleep(0.3)
        current["run"] = "r2"
        await publish(api, "r2", b"r2 READY\n")
        await asyncio.wait_for(waiting, 5)
        assert bytes(out) == b"r1 crashed\nr2 READY\n"
    finally:
        await api.nc.close()


async def test_gives_up_with_a_typed_error_after_patience(nats_url: str, store: Store) -> None:
    api = await ApiClient.connect(nats_url)
    try:
        await publish(api, "r1", b"no marker here\n")

        async def run_of(_api: ApiClient, _name: str) -> str | None:
            return "r1"

        started = time.monotonic()
        with pytest.raises(ApiError) as err:
            await follow(api, VM, "READY", 1, bytearray().extend, run_of)
        assert err.value.code is Code.UNAVAILABLE
        assert "'READY' did not appear on the console within 1s" in err.value.message
        assert time.monotonic() - started >= 0.9  # it waited its patience out
    finally:
        await api.nc.close()
