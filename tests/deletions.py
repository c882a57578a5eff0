"""Keys deleted around a sweep's mark, as the tests of the leader's sweep and of its trim
(servicekit.kvmarkers) lay them out on a real nats-server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from nats.js import JetStreamContext

from proto.spec import VMSpec
from proto.state import VM
from servicekit.store import Bucket
from tests.kvhistory import last_sequence


def vm(name: str, at: float = 1.0) -> VM:
    # ~700 bytes, as a small VM's record: the revisions a trim takes out outweigh the marker it keeps
    return VM(spec=VMSpec(name=name, labels={f"pad{i}": "x" * 60 for i in range(10)}), created_at=at)


async def until(check: Callable[[], Awaitable[bool]], within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "not within the time"
        await asyncio.sleep(0.1)


async def deleted_around_a_mark(js: JetStreamContext, vms: Bucket[VM]) -> int:
    """Returns the mark: before it "old" (two revisions) and "back" were deleted; after it "back" was
    written again, and "young" written and deleted. "live" has two revisions and stays."""
    for name in ("old", "back", "live"):
        revision = await vms.create(name, vm(name))
        await vms.update(name, vm(name, 2.0), revision)
    await vms.delete("old")
    await vms.delete("back")
    mark = await last_sequence(js, "vms")
    await vms.create("back", vm("back", 3.0))
    await vms.create("young", vm("young"))
    await vms.delete("young")
    return mark
