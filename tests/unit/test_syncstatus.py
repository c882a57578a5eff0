"""The status a handler writes after every sync (handler.syncstatus): a failed sync puts
Synchronized=False with the error on the VMI, once per error however often it is retried; the next
successful sync puts it back to True; nothing is said while all goes well, nor for another node's VMI."""

from __future__ import annotations

from handler.syncstatus import SyncStatus
from proto.errors import ApiError, Code
from proto.nodeapi import CONDITION_SYNCHRONIZED, StatusReply, StatusReport
from proto.spec import VMSpec
from proto.state import VMI, Phase


class FakeNodeApi:
    """The node API as the handler sees it: it records what it was told, and can be away."""

    def __init__(self) -> None:
        self.said: list[tuple[str, str, str]] = []  # (vmi, status, message)
        self.away = False

    async def report(self, report: StatusReport, patience: float = -1) -> StatusReply:
        if self.away:
            raise ApiError(Code.UNAVAILABLE, "the control plane did not answer")
        for cond in report.conditions or []:
            assert cond.type == CONDITION_SYNCHRONIZED
            self.said.append((report.vmi, cond.status, cond.message))
        return StatusReply(applied=True, phase=Phase.RUNNING)


def vmi(node: str = "node1") -> VMI:
    return VMI(name="vm1", uid="u1", spec=VMSpec(name="vm1"), created_at=0.0, phase=Phase.SCHEDULED, node_name=node)


async def test_a_failed_sync_says_why_once_and_a_good_one_clears_it() -> None:
    api = FakeNodeApi()
    status = SyncStatus(api, "node1")
    await status.succeeded(vmi())
    assert api.said == []  # all well: nothing written
    for _ in range(3):  # retried three times, the same error
        await status.failed(vmi(), OSError("qemu-img: No space left on device"))
    assert api.said == [("vm1", "False", "qemu-img: No space left on device")]
    await status.failed(vmi(), RuntimeError("another\nerror"))  # a new error is said, made printable
    assert api.said[-1] == ("vm1", "False", "another error")
    await status.succeeded(vmi())
    assert api.said[-1] == ("vm1", "True", "")
    await status.succeeded(vmi())
    assert len(api.said) == 3


async def test_unsaid_is_said_by_the_next_sync_and_never_for_another_nodes_vmi() -> None:
    api = FakeNodeApi()
    status = SyncStatus(api, "node1")
    await status.failed(vmi("node2"), OSError("x"))
    await status.failed(None, OSError("x"))
    assert api.said == []
    api.away = True
    await status.failed(vmi(), OSError("boom"))  # could not be said: no exception of its own
    api.away = False
    await status.failed(vmi(), OSError("boom"))  # the retry says it
    assert api.said == [("vm1", "False", "boom")]
