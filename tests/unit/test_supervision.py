"""Following a domain (launcher.supervision) against a stateful fake libvirtd: pauses become the
Paused condition, ends the final phase, a lost libvirtd is restarted or, failing that, its QEMU
killed and the VMI failed."""

from __future__ import annotations

import asyncio
from pathlib import Path

from launcher.fake_libvirtd import FakeLibvirtd
from launcher.supervision import DomainFollower
from proto.nodeapi import NodeCondition
from proto.state import Phase


def follower(fake: FakeLibvirtd, said: list[NodeCondition], back: asyncio.Event | None = None) -> DomainFollower:
    async def report(cond: NodeCondition) -> None:
        said.append(cond)
        if back is not None and cond.type == "LibvirtdLost" and cond.status == "False":
            back.set()

    f = DomainFollower(fake, report, vmi="vm", netns="pod", workdir=Path("/nonexistent"), restarts=3, delay=0)
    f.watch()
    return f


def story(said: list[NodeCondition]) -> list[tuple[str, str, str]]:
    return [(c.type, c.status, c.reason) for c in said]


async def test_a_pause_and_resume_then_a_poweroff() -> None:
    fake, said = FakeLibvirtd({"vm": True}), list[NodeCondition]()
    f = follower(fake, said)
    for event, detail in [("SUSPENDED", "IOERROR"), ("RESUMED", "0"), ("SHUTDOWN", "0"), ("STOPPED", "SHUTDOWN")]:
        fake.emit(event, detail)
    assert await asyncio.wait_for(f.follow(), 5) == (Phase.SUCCEEDED, "guest shut down")
    assert story(said) == [("Paused", "True", "PausedIOError"), ("Paused", "False", "Resumed")]


async def test_the_resume_every_domain_starts_with_is_no_news() -> None:
    """libvirt says RESUMED as a domain starts: a guest never paused is not said to run again."""
    fake, said = FakeLibvirtd({"vm": True}), list[NodeCondition]()
    f = follower(fake, said)
    for event, detail in [("STARTED", "BOOTED"), ("RESUMED", "0"), ("SUSPENDED", "PAUSED"), ("SUSPENDED", "PAUSED"),
                          ("RESUMED", "0"), ("RESUMED", "0"), ("STOPPED", "SHUTDOWN")]:
        fake.emit(event, detail)
    await asyncio.wait_for(f.follow(), 5)
    assert story(said) == [("Paused", "True", "PausedByUser"), ("Paused", "False", "Resumed")]


async def test_a_lost_libvirtd_is_restarted_and_the_domain_followed_on_the_new_connection() -> None:
    fake, said, back = FakeLibvirtd({"vm": True}), list[NodeCondition](), asyncio.Event()
    f = follower(fake, said, back)
    fake.die()
    task = asyncio.create_task(f.follow())
    await asyncio.wait_for(back.wait(), 5)
    assert story(said) == [("LibvirtdLost", "True", "LibvirtdDied"), ("LibvirtdLost", "False", "LibvirtdRestarted")]
    assert fake.restarts == 1 and fake.pid == 101 and f.dom == "vm" and fake.killed == []
    fake.emit("STOPPED", "FAILED")  # on the new connection's callback
    phase, reason = await asyncio.wait_for(task, 5)
    assert phase is Phase.FAILED and "QEMU exited unexpectedly" in reason


async def test_a_libvirtd_that_comes_back_on_the_third_try() -> None:
    fake, said, back = FakeLibvirtd({"vm": True}), list[NodeCondition](), asyncio.Event()
    fake.refuse_starts = 2
    f = follower(fake, said, back)
    fake.die()
    task = asyncio.create_task(f.follow())
    await asyncio.wait_for(back.wait(), 5)
    assert fake.restarts == 3 and said[-1].message.startswith("libvirtd restarted (attempt 3)")
    task.cancel()


async def test_a_libvirtd_that_will_not_come_back_fails_the_vmi_and_kills_its_qemu() -> None:
    fake, said = FakeLibvirtd({"vm": True}), list[NodeCondition]()
    fake.refuse_starts = 10
    f = follower(fake, said)
    fake.die()
    phase, reason = await asyncio.wait_for(f.follow(), 5)
    assert (phase, reason) == (Phase.FAILED, "libvirtd died and did not come back after 3 restarts")
    assert fake.restarts == 4 and fake.killed == [1000] and fake.domains == {"vm": False}
    assert story(said) == [("LibvirtdLost", "True", "LibvirtdDied")]


async def test_a_domain_that_did_not_survive_its_libvirtd_fails_the_vmi() -> None:
    fake, said = FakeLibvirtd({"vm": True}), list[NodeCondition]()
    f = follower(fake, said)
    fake.domains["vm"] = False  # QEMU died with it
    fake.die()
    phase, reason = await asyncio.wait_for(f.follow(), 5)
    assert (phase, reason) == (Phase.FAILED, "libvirtd died and the domain did not survive it")
    assert fake.restarts == 1 and fake.killed == []  # nothing left to kill


async def test_a_domain_the_new_libvirtd_does_not_know_is_retried_then_given_up() -> None:
    fake, said = FakeLibvirtd({}), list[NodeCondition]()  # e.g. its status XML lost: libvirt says "Domain not found"
    f = follower(fake, said)
    fake.die()
    phase, reason = await asyncio.wait_for(f.follow(), 5)
    assert phase is Phase.FAILED and "did not come back after 3 restarts" in reason and fake.restarts == 4
