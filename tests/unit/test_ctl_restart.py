"""``virtbus restart --wait``: done when another instance runs, whatever the old one does as it stops."""

from __future__ import annotations

import argparse
import asyncio
from typing import cast

import msgspec
import pytest

from ctl import lifecyclecmd
from ctl.client import ApiClient
from proto.api import Ack, NameRequest, VMReply, VMView
from proto.errors import ApiError, Code
from proto.spec import RunStrategy, VMSpec
from proto.state import VM, VMI, Phase


def view(vmi: VMI | None, status: str) -> VMView:
    return VMView(vm=VM(spec=VMSpec(name="t", run_strategy=RunStrategy.ALWAYS), created_at=0.0), revision=1,
                  printable_status=status, vmi=vmi)


OLD = VMI(name="t", uid="old", spec=VMSpec(name="t"), created_at=0.0, phase=Phase.RUNNING, node_name="n1")
NEW = msgspec.structs.replace(OLD, uid="new", phase=Phase.SCHEDULED)


class FakeVMs:
    """The API as the CLI sees one VM restarted: each read of the VM shows the next of the states
    given (the last one stays), as the controller would move it along between the CLI's polls."""

    def __init__(self, states: list[VMView]) -> None:
        self.states, self.reads = states, 0
        self.asked: list[str] = []

    async def call(self, kind: str, verb: str, request: NameRequest, reply: type[object]) -> object:
        assert kind == "vm" and request.name == "t"
        if verb == "get":
            state = self.states[min(self.reads, len(self.states) - 1)]
            self.reads += 1
            return VMReply(item=state)
        self.asked.append(verb)
        return Ack(message=f"VM t: {verb} requested")


def restart(api: FakeVMs) -> int:
    args = argparse.Namespace(command="restart", name="t", wait=True, timeout=20.0, kind="vm")
    return asyncio.run(lifecyclecmd.cmd_lifecycle(cast(ApiClient, api), args))


def test_the_wait_outlasts_the_old_instance_failing_as_it_stops() -> None:
    # the old instance reads Running a moment after the restart was asked, then CrashLoopBackOff as
    # it is ended under runStrategy Always: neither is the restart's outcome
    stopping = msgspec.structs.replace(OLD, stop_requested=True)
    ended = msgspec.structs.replace(OLD, phase=Phase.FAILED, stop_requested=True)
    states = [view(OLD, "Running"), view(OLD, "Running"), view(OLD, "Running"), view(stopping, "Stopping"),
              view(ended, "CrashLoopBackOff"), view(None, "Starting"), view(NEW, "Starting"),
              view(msgspec.structs.replace(NEW, phase=Phase.RUNNING), "Running")]
    api = FakeVMs(states)
    assert restart(api) == 0
    assert api.asked == ["restart"] and api.reads >= len(states)  # it saw the new instance Running


def test_the_new_instance_failing_ends_the_wait_with_its_reason() -> None:
    failed = msgspec.structs.replace(NEW, phase=Phase.FAILED, reason="the launcher exited")
    api = FakeVMs([view(OLD, "Running"), view(OLD, "Running"), view(failed, "CrashLoopBackOff")])
    with pytest.raises(ApiError) as info:
        restart(api)
    assert info.value.code is Code.INVALID and "CrashLoopBackOff" in info.value.message
    assert "the launcher exited" in info.value.message
