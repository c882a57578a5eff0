"""The launcher's side of pause, unpause and soft-reboot: the pure plan (launcher.powerplan), and the
keeper carrying it out (launcher.power) against a stateful fake libvirtd that dies like the real one."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from launcher.fake_libvirtd import FakeLibvirtd
from launcher.power import PowerKeeper
from launcher.powerplan import Done, Step, Wanted, plan
from proto.nodeapi import EventNote


@pytest.mark.parametrize(("wanted", "done", "paused", "steps"), [
    (Wanted(), Done(), False, []),
    (Wanted(paused=True, pause_generation=1), Done(), False, [Step.SUSPEND]),
    # a pause holds: resumed by anything else, the guest is paused again
    (Wanted(paused=True, pause_generation=1), Done(pause_generation=1), False, [Step.SUSPEND]),
    (Wanted(paused=True, pause_generation=1), Done(), True, []),
    (Wanted(pause_generation=2), Done(pause_generation=1), True, [Step.RESUME]),
    # no unpause asked since: a guest the hypervisor (or an admin) paused stays paused
    (Wanted(pause_generation=2), Done(pause_generation=2), True, []),
    (Wanted(reboots=1), Done(), False, [Step.REBOOT]),
    (Wanted(reboots=3), Done(reboots=1), False, [Step.REBOOT]),  # asked twice meanwhile: one reboot
    (Wanted(reboots=1), Done(), True, []),  # paused: it would not hear the button; it waits
    (Wanted(paused=True, pause_generation=1, reboots=1), Done(), False, [Step.SUSPEND]),
], ids=["idle", "pause", "pause-holds", "already-paused", "unpause", "io-pause-stays", "reboot",
        "reboots-collapse", "reboot-waits", "pause-before-reboot"])
def test_plan(wanted: Wanted, done: Done, paused: bool, steps: list[Step]) -> None:
    assert plan(wanted, done, paused)[0] == steps


def test_a_reboot_waiting_for_an_unpause_is_not_forgotten() -> None:
    wanted = Wanted(paused=True, pause_generation=1, reboots=1)
    _, done = plan(wanted, Done(), True)
    assert done.reboots == 0
    steps, done = plan(Wanted(pause_generation=2, reboots=1), done, True)
    assert steps == [Step.RESUME, Step.REBOOT] and done == Done(pause_generation=2, reboots=1)


def keeper(fake: FakeLibvirtd, notes: list[str]) -> PowerKeeper:
    async def note(n: EventNote) -> None:
        notes.append(n.reason)

    return PowerKeeper(fake, lambda: "vm", note, retry=0.01)


async def settle(k: PowerKeeper) -> None:
    for _ in range(50):
        await asyncio.sleep(0.01)
        if not k.wake.is_set():
            return


async def test_the_keeper_pauses_unpauses_and_reboots_once_each() -> None:
    fake, notes = FakeLibvirtd({"vm": True}), list[str]()
    k = keeper(fake, notes)
    task = asyncio.create_task(k.run())
    try:
        k.want(Wanted(paused=True, pause_generation=1))
        await settle(k)
        assert fake.paused == {"vm"}
        await fake.resume("vm")  # someone's virsh resume: the pause is the VMI's, it holds
        k.poke()
        await settle(k)
        assert fake.paused == {"vm"}
        k.want(Wanted(pause_generation=2, reboots=1))
        await settle(k)
        assert fake.paused == set() and fake.reboots == ["vm"] and notes == ["SoftReboot"]
        k.want(Wanted(pause_generation=2, reboots=1))  # the same VMI again: nothing twice
        await settle(k)
        assert fake.reboots == ["vm"]
    finally:
        task.cancel()


async def test_the_keeper_retries_while_libvirtd_is_away() -> None:
    fake, notes = FakeLibvirtd({"vm": True}), list[str]()
    k = keeper(fake, notes)
    fake.die()
    task = asyncio.create_task(k.run())
    try:
        k.want(Wanted(paused=True, pause_generation=1))
        await asyncio.sleep(0.05)
        assert fake.paused == set()
        await fake.restart("pod", Path("/nonexistent"))
        for _ in range(100):
            await asyncio.sleep(0.01)
            if fake.paused:
                break
        assert fake.paused == {"vm"}
    finally:
        task.cancel()


async def test_a_stopping_instance_is_not_paused_again_behind_its_shutdown() -> None:
    fake, notes = FakeLibvirtd({"vm": True}), list[str]()
    k = keeper(fake, notes)
    task = asyncio.create_task(k.run())
    try:
        k.want(Wanted(paused=True, pause_generation=1))
        await settle(k)
        assert fake.paused == {"vm"}
        k.stand_down()
        await fake.resume("vm")  # what PrivateLibvirtd.shutdown does first to a paused guest
        k.poke()
        await settle(k)
        assert fake.paused == set()
    finally:
        task.cancel()
