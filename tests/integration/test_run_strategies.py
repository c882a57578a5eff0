"""virtctl start/stop/restart keep the user's run strategy as KubeVirt does: only Always becomes Halted
on stop, and Halted Always on start; RerunOnFailure and Once keep theirs (a stopped instance ends
Succeeded, so it is not rerun)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import msgspec
import pytest

from proto.errors import ApiError
from proto.spec import RunStrategy, VMSpec
from proto.state import VM, VMI, Phase, grace_period
from scheduler.api import Api
from scheduler.controllers import Scheduler
from scheduler.vmplan import Action, plan
from servicekit.store import Store

pytestmark = pytest.mark.integration


def manifest(strategy: str) -> bytes:
    return json.dumps({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "vm1"},
                       "spec": {"runStrategy": strategy, "template": {"spec": {"domain": {
                           "devices": {}, "resources": {"requests": {"memory": "64Mi"}}}}}}}).encode()


@pytest.mark.parametrize("strategy", [RunStrategy.RERUN_ON_FAILURE, RunStrategy.ONCE, RunStrategy.MANUAL])
async def test_stop_and_start_keep_the_strategy(store: Store, strategy: RunStrategy) -> None:
    api = Api(store)
    await api.vm_create(manifest(strategy.value))
    await store.vmis.create("vm1", VMI(name="vm1", uid="u1", spec=VMSpec(name="vm1", run_strategy=strategy),
                                       created_at=time.time(), phase=Phase.RUNNING, node_name="node1"))
    await api.vm_stop(b'{"name": "vm1"}')
    vm, vmi = await store.vms.require("vm1", "VM"), await store.vmis.require("vm1", "VMI")
    assert vm.value.spec.run_strategy is strategy and vmi.value.stop_requested
    # the launcher stops it and its node tears it down: Succeeded, and the controller leaves it be
    await store.vmis.update("vm1", msgspec.structs.replace(vmi.value, phase=Phase.SUCCEEDED, torn_down=True),
                            vmi.revision)
    assert plan(vm.value, (await store.vmis.require("vm1", "VMI")).value) is Action.NOTHING
    await api.vm_start(b'{"name": "vm1"}')
    vm = await store.vms.require("vm1", "VM")
    assert vm.value.spec.run_strategy is strategy
    # a new instance is on its way: the finished one goes, then one is created
    assert plan(vm.value, (await store.vmis.require("vm1", "VMI")).value) is Action.DELETE_VMI
    assert plan(vm.value, None) is Action.CREATE_VMI


async def test_always_stops_to_halted_and_starts_to_always(store: Store) -> None:
    api = Api(store)
    await api.vm_create(manifest("Always"))
    await api.vm_stop(b'{"name": "vm1"}')
    assert (await store.vms.require("vm1", "VM")).value.spec.run_strategy is RunStrategy.HALTED
    await api.vm_start(b'{"name": "vm1"}')
    assert (await store.vms.require("vm1", "VM")).value.spec.run_strategy is RunStrategy.ALWAYS


@pytest.mark.parametrize("strategy", [RunStrategy.ALWAYS, RunStrategy.MANUAL])
async def test_a_forced_stop_cuts_the_guests_grace_short_also_once_it_is_stopping(store: Store,
                                                                                   strategy: RunStrategy) -> None:
    """virtctl stop --force --grace-period N: the instance's guest has N seconds, not its spec's 30;
    a second, shorter one cuts a stop under way shorter still; a longer one changes nothing."""
    api = Api(store)
    await api.vm_create(manifest(strategy.value))
    await store.vmis.create("vm1", VMI(name="vm1", uid="u1", spec=VMSpec(name="vm1", run_strategy=strategy),
                                       created_at=time.time(), phase=Phase.RUNNING, node_name="node1"))
    said = (await api.vm_stop(b'{"name": "vm1", "gracePeriod": 10}')).message
    assert said == "VM vm1 was scheduled to stop (forced: its guest has 10s)"
    vmi = (await store.vmis.require("vm1", "VMI")).value
    assert vmi.stop_requested and grace_period(vmi) == 10
    expected = RunStrategy.HALTED if strategy is RunStrategy.ALWAYS else strategy
    assert (await store.vms.require("vm1", "VM")).value.spec.run_strategy is expected

    await api.vm_stop(b'{"name": "vm1", "gracePeriod": 0}')  # the guest hangs: pull the plug now
    assert grace_period((await store.vmis.require("vm1", "VMI")).value) == 0
    before = await store.vmis.require("vm1", "VMI")
    await api.vm_stop(b'{"name": "vm1", "gracePeriod": 20}')
    after = await store.vmis.require("vm1", "VMI")
    assert after.revision == before.revision and grace_period(after.value) == 0

    for body, field in ((b'{"name": "vm1", "gracePeriod": -1}', "gracePeriod"),
                        (b'{"name": "vm1", "gracePeriod": 86400}', "gracePeriod"),
                        (b'{"name": "vm1", "gracePeriod": "0"}', None),
                        (b'{"name": "../x", "gracePeriod": 0}', "name")):
        with pytest.raises(ApiError) as refused:
            await api.vm_stop(body)
        assert refused.value.field == field or field is None, refused.value
    assert (await store.vmis.require("vm1", "VMI")).revision == after.revision


async def test_a_forced_restart_stops_the_old_instance_within_its_grace(store: Store) -> None:
    api = Api(store)
    await api.vm_create(manifest("Always"))
    await store.vmis.create("vm1", VMI(name="vm1", uid="u1", spec=VMSpec(name="vm1", run_strategy=RunStrategy.ALWAYS),
                                       created_at=time.time(), phase=Phase.RUNNING, node_name="node1"))
    said = (await api.vm_restart(b'{"name": "vm1", "gracePeriod": 0}')).message
    assert said == "VM vm1 was scheduled to restart (forced: its guest has 0s)"
    vm, vmi = (await store.vms.require("vm1", "VM")).value, (await store.vmis.require("vm1", "VMI")).value
    assert vm.restart_of == "u1" and vmi.stop_requested and grace_period(vmi) == 0
    assert vm.spec.run_strategy is RunStrategy.ALWAYS  # a restart keeps it running


async def test_start_paused_makes_one_instance_paused_and_the_next_runs(store: Store) -> None:
    """virtctl start --paused: the leader's controller makes the instance with its pause asked (its
    guest waits for unpause) and clears the request; a later plain start is not paused."""
    api = Api(store)
    scheduler = Scheduler(store)
    await scheduler.start()
    try:
        await api.vm_create(manifest("Halted"))
        assert (await api.vm_start(b'{"name": "vm1", "paused": true}')).message == "VM vm1 was scheduled to start"
        vmi = await until_vmi(store)
        assert vmi.pause_requested and vmi.pause_generation == 1
        vm = await until_vm(store, lambda vm: not vm.start_paused)
        assert vm.spec.run_strategy is RunStrategy.ALWAYS

        await api.vm_stop(b'{"name": "vm1"}')
        await store.vmis.delete("vm1")  # its node has torn it down
        await api.vm_start(b'{"name": "vm1"}')
        assert not (await until_vmi(store)).pause_requested
    finally:
        await scheduler.stop()
    with pytest.raises(ApiError):
        await api.vm_start(b'{"name": "vm1", "paused": "yes"}')


async def until_vmi(store: Store) -> VMI:
    for _ in range(100):
        if (entry := await store.vmis.get("vm1")) is not None:
            return entry.value
        await asyncio.sleep(0.1)
    raise AssertionError("the controller made no instance")


async def until_vm(store: Store, ok: Callable[[VM], bool]) -> VM:
    for _ in range(100):
        if ok(vm := (await store.vms.require("vm1", "VM")).value):
            return vm
        await asyncio.sleep(0.1)
    raise AssertionError("the VM never got there")
