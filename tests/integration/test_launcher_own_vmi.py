"""A launcher follows its own VMI (launcher.ownvmi) on a real nats-server with authentication: through
its node's copy as the shard republishes it, with no consumer on the server; never back to an older
value than it had, whatever copy is written by hand; its VMI's deletion heard; and a change made
while it was away heard once it reconnects, its reads failing meanwhile; and, following it through a
consumer (a shard that does not republish), a first read made again once the bus is back."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from launcher import ownvmi
from proto import subjects
from proto.nodevmis import NodeVmi
from proto.spec import VMSpec
from proto.state import VMI, Phase
from scheduler.nodevmis import NodeVmiMirror
from servicekit.store import Store
from tests.conftest import NatsServer, end_process, restart_nats_server

pytestmark = pytest.mark.integration
NODE = "node1"


def vmi(name: str, *, paused: bool = False, generation: int = 0) -> VMI:
    return VMI(name=name, uid=f"{name}-u", spec=VMSpec(name=name), created_at=0.0, phase=Phase.RUNNING,
               node_name=NODE, pause_requested=paused, pause_generation=generation)


async def launcher_store(nats_server: NatsServer) -> Store:
    """What a launcher connects as: its node's credentials."""
    return await Store.connect(nats_server.url, f"launcher-{NODE}", creds=nats_server.creds(f"node-{NODE}"),
                               inbox=subjects.inbox_prefix("node", NODE), create=False, check=False)


async def until(check: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


class Follower:
    """The launcher's watch, run as a task; what it heard, in order."""

    def __init__(self, store: Store, name: str, *, republished: bool = True) -> None:
        self.heard: list[VMI | ownvmi.Gone] = []
        self.task = asyncio.create_task(self._follow(store, name, republished))

    async def _follow(self, store: Store, name: str, republished: bool) -> None:
        async for value in ownvmi.changes(store, NODE, name, republished=republished):
            self.heard.append(value)

    def paused(self) -> list[bool | None]:
        return [None if isinstance(v, ownvmi.Gone) else v.pause_requested for v in self.heard]

    async def stop(self) -> None:
        """Ended, whatever it ended with (a watch that failed is what the test's assertions report)."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task


async def consumers(store: Store, bucket: str) -> list[str]:
    return [c.name for c in await store.js.consumers_info(subjects.kv_stream(bucket))]


@pytest.mark.usefixtures("both_servers")  # the shards republish on Debian's 2.9 as on 2.15
async def test_a_launcher_hears_its_own_vmi_through_its_copy_with_no_consumer_on_the_server(
        nats_server: NatsServer, store: Store) -> None:
    await store.vmis.create("mine", vmi("mine"))
    await store.vmis.create("other", vmi("other"))
    mirror = asyncio.create_task(NodeVmiMirror(store).run())  # the leader's copies
    shard = subjects.node_vmis_bucket(NODE)
    key = subjects.node_vmi(NODE, "mine")
    deadline = time.monotonic() + 10
    while await store.node_vmis(NODE).get(key) is None:  # noqa: ASYNC110 - a read of the server's, not an event here
        assert time.monotonic() < deadline, "the leader never copied the VMI"
        await asyncio.sleep(0.05)
    leaders = {b: await consumers(store, b) for b in (subjects.BUCKET_VMIS, shard)}  # the mirror's own
    launcher = await launcher_store(nats_server)
    follower = Follower(launcher, "mine")
    try:
        await until(lambda: follower.paused() == [False])  # the current value first, as a watch gives it
        await store.vmis.mutate("other", lambda v: vmi("other", paused=True, generation=1))
        await store.vmis.mutate("mine", lambda v: vmi("mine", paused=True, generation=1))
        await until(lambda: follower.paused() == [False, True])
        # nothing on the server is kept for the launcher: the consumers are the leader's alone
        assert {b: await consumers(store, b) for b in leaders} == leaders
        await store.vmis.delete("mine")
        await until(lambda: follower.paused()[-1:] == [None])
        await asyncio.sleep(0.5)
        assert follower.paused() == [False, True, None]  # "other" changed too: never heard
    finally:
        await follower.stop()
        mirror.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await mirror
        await launcher.close()


async def test_a_copy_written_by_hand_never_takes_the_launcher_back_or_ends_it(
        nats_server: NatsServer, store: Store) -> None:
    await store.vmis.create("other", vmi("other"))  # so that mine's revision has an older one below it
    revision = await store.vmis.create("mine", vmi("mine", paused=True, generation=1))
    copies = store.node_vmis(NODE)
    key = subjects.node_vmi(NODE, "mine")
    launcher = await launcher_store(nats_server)
    follower = Follower(launcher, "mine")
    try:
        await until(lambda: follower.paused() == [True])
        # an older copy than the VMI the launcher read: passed over
        await copies.put(key, NodeVmi(vmi=vmi("mine"), revision=revision - 1))
        # a copy that does not decode, put on the bus by hand: vmis is read instead, nothing moves
        await store.js.publish(subjects.kv_subject(subjects.node_vmis_bucket(NODE), key), b"{not json")
        # the copy deleted while the VMI stays: vmis says it is there, so the launcher goes on
        await copies.delete(key)
        # a newer copy: heard
        await copies.put(key, NodeVmi(vmi=vmi("mine", generation=2), revision=revision + 5))
        await until(lambda: follower.paused() == [True, False])
        await asyncio.sleep(0.5)
        assert follower.paused() == [True, False]
        bad = msgspec.json.encode({"vmi": "nonsense", "revision": revision + 9})
        await store.js.publish(subjects.kv_subject(subjects.node_vmis_bucket(NODE), key), bad)
        await asyncio.sleep(0.5)
        assert follower.paused() == [True, False]
    finally:
        await follower.stop()
        await launcher.close()


@pytest.mark.usefixtures("both_servers")
async def test_a_change_made_while_the_launcher_was_away_is_heard_once_it_is_back(
        nats_server: NatsServer, nats_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # it reads its VMI again every 0.3 s, so reads fail while the server is away: the watch goes on
    monkeypatch.setattr(ownvmi, "RESYNC_S", 0.3)
    control = await Store.connect(nats_url, "control-under-test")
    await control.vmis.create("mine", vmi("mine"))
    launcher = await launcher_store(nats_server)
    follower = Follower(launcher, "mine")
    again: asyncio.subprocess.Process | None = None
    try:
        await until(lambda: follower.paused() == [False])
        launcher.nc.options["reconnect_time_wait"] = 10  # back well after the control plane
        again = await restart_nats_server(nats_server, tmp_path)
        deadline = time.monotonic() + 20
        while True:  # written as soon as the server is back, while the launcher is still away (no copy made)
            assert time.monotonic() < deadline, "the control plane never wrote the change"
            with contextlib.suppress(Exception):
                await control.vmis.mutate("mine", lambda v: vmi("mine", paused=True, generation=1))
                break
            await asyncio.sleep(0.2)
        assert not launcher.nc.is_connected, "the launcher was back first: this test proves nothing"
        await until(lambda: follower.paused() == [False, True], within=30)
    finally:
        try:
            await follower.stop()
            for s in (launcher, control):
                with contextlib.suppress(Exception):
                    await s.close()
        finally:
            await end_process(again)  # ours; the fixture ends the first one


@pytest.mark.usefixtures("both_servers")  # the fallback is for nats-server 2.9's shards above all
async def test_a_launcher_following_by_consumer_reads_its_vmi_once_the_bus_is_back(
        nats_server: NatsServer, nats_url: str, tmp_path: Path) -> None:
    """A launcher of a shard that does not republish (an older virtbus's, on nats-server 2.9) follows
    its VMI through a watch of vmis: started while the server is away, its first read fails and is made
    again once the server is back, and the watch then hears a change."""
    writer = await Store.connect(nats_url, "control-under-test")
    await writer.vmis.create("mine", vmi("mine"))
    await writer.close()
    launcher = await launcher_store(nats_server)
    # away for longer than a read's wait, so the first read fails rather than waiting the outage out
    restarting = asyncio.create_task(restart_nats_server(nats_server, tmp_path, down_s=8))
    again: asyncio.subprocess.Process | None = None
    follower: Follower | None = None
    control: Store | None = None
    try:
        await until(lambda: not launcher.nc.is_connected)
        follower = Follower(launcher, "mine", republished=False)
        again = await restarting
        await until(lambda: follower is not None and follower.paused() == [False], within=40)
        control = await Store.connect(nats_url, "control-under-test")
        await control.vmis.mutate("mine", lambda v: vmi("mine", paused=True, generation=1))
        await until(lambda: follower is not None and follower.paused() == [False, True], within=20)
    finally:
        try:
            if follower is not None:
                await follower.stop()
            for s in (launcher, control):
                if s is not None:
                    with contextlib.suppress(Exception):
                        await s.close()
        finally:
            if again is None and not restarting.done():
                restarting.cancel()
            with contextlib.suppress(BaseException):
                again = again or await restarting
            await end_process(again)
