"""pause, unpause and soft-reboot over plain NATS against the real api service: each records its
request in the VMI (what the launcher carries out), typed errors for what cannot be, nothing written
by a refusal."""

from __future__ import annotations

import json
import time

import msgspec
import pytest

from proto import subjects
from proto.nodeapi import NodeCondition, StatusReport, apply_report
from proto.spec import VMSpec
from proto.state import VM, VMI, Phase
from servicekit.store import Store

pytestmark = pytest.mark.integration


async def call(store: Store, kind: str, verb: str, name: str = "vm1") -> dict[str, object]:
    msg = await store.nc.request(subjects.api(kind, verb), json.dumps({"name": name}).encode(), timeout=5)
    reply = json.loads(msg.data)
    assert isinstance(reply, dict)
    return reply


def code(reply: dict[str, object]) -> object:
    error = reply.get("error")
    return error.get("code") if isinstance(error, dict) else None


async def running_vm(store: Store, phase: Phase = Phase.RUNNING) -> None:
    spec = VMSpec(name="vm1", memory="64Mi")
    await store.vms.create("vm1", VM(spec=spec, created_at=time.time()))
    await store.vmis.create("vm1", VMI(name="vm1", uid="u1", spec=spec, created_at=time.time(), phase=phase,
                                       node_name="node1"))


async def vmi(store: Store) -> VMI:
    return (await store.vmis.require("vm1", "VMI")).value


async def say_paused(store: Store, status: str) -> None:
    """What the launcher's supervision reports once libvirt says the guest paused or resumed."""
    report = StatusReport(vmi="vm1", uid="u1", conditions=[NodeCondition(
        type="Paused", status=status, reason="PausedByUser" if status == "True" else "Resumed")])
    await store.vmis.mutate("vm1", lambda v: apply_report(v, report, "node1", time.time()))


async def test_pause_unpause_and_soft_reboot_are_recorded_in_the_vmi(api: Store) -> None:
    store = api
    await running_vm(store)
    assert "scheduled to pause" in str((await call(store, "vm", "pause"))["message"])
    assert (await vmi(store)).pause_requested and (await vmi(store)).pause_generation == 1
    assert "already paused" in str((await call(store, "vm", "pause"))["message"])
    await say_paused(store, "True")
    view = json.loads((await store.nc.request(subjects.api("vm", "get"), b'{"name": "vm1"}', timeout=5)).data)
    assert view["item"]["printableStatus"] == "Paused"
    assert code(await call(store, "vm", "soft-reboot")) == "Invalid"  # unpause first
    assert "scheduled to unpause" in str((await call(store, "vmi", "unpause"))["message"])
    after = await vmi(store)
    assert not after.pause_requested and after.pause_generation == 2
    await say_paused(store, "False")
    assert "not paused" in str((await call(store, "vm", "unpause"))["message"])
    await call(store, "vm", "soft-reboot")
    await call(store, "vmi", "soft-reboot")
    final = await vmi(store)
    assert final.reboot_requests == 2 and final.phase is Phase.RUNNING and final.uid == "u1"


async def test_what_cannot_be_paused_is_refused_and_nothing_is_written(api: Store) -> None:
    store = api
    for verb in ("pause", "unpause", "soft-reboot"):
        assert code(await call(store, "vm", verb, "nosuch")) == "NotFound"
        assert code(await call(store, "vmi", verb, "nosuch")) == "NotFound"
        assert code(await call(store, "vm", verb, "Bad_Name")) == "Invalid"
    await store.vms.create("vm1", VM(spec=VMSpec(name="vm1", memory="64Mi"), created_at=time.time()))
    reply = await call(store, "vm", "pause")
    assert code(reply) == "NotFound" and "no instance" in json.dumps(reply)  # a VM without a running instance
    await store.vms.delete("vm1")
    await running_vm(store, Phase.SCHEDULED)
    reply = await call(store, "vm", "pause")
    assert code(reply) == "Conflict" and reply["error"]["retryable"] is True  # type: ignore[index]
    entry = await store.vmis.require("vm1", "VMI")
    await store.vmis.update("vm1", msgspec.structs.replace(entry.value, phase=Phase.SUCCEEDED), entry.revision)
    for verb in ("pause", "unpause", "soft-reboot"):
        assert code(await call(store, "vm", verb)) == "Invalid"
    untouched = await vmi(store)
    assert (untouched.pause_requested, untouched.pause_generation, untouched.reboot_requests) == (False, 0, 0)
