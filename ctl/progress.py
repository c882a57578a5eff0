"""Asking for a change and waiting for it, virtctl style: a verb retried while the API says a retry
helps (with --wait), then each new state printed until the VM is where it was asked to go."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ctl.client import ApiClient
from ctl.stdout import say
from proto.api import Ack, NameRequest, VMReply, VMView
from proto.errors import ApiError, Code
from proto.spec import RunStrategy


async def ask(api: ApiClient, kind: str, verb: str, name: str, *, wait: bool, patience: float,
              request: Any = None) -> str:
    """The verb's answer; with wait, a retryable refusal ("still stopping", "not running yet") is
    waited out, for up to patience seconds. request: the verb's own, when more than a name."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return (await api.call(kind, verb, request or NameRequest(name=name), Ack)).message
        except ApiError as exc:
            if not (wait and exc.retryable and time.monotonic() < deadline):
                raise
            say(f"  {name}: {exc.message}; retrying")
            await asyncio.sleep(1.0)


async def wait_for(what: str, probe: Callable[[], Awaitable[tuple[bool, str]]], limit: float) -> None:
    """Poll until probe says done, printing each new state and a heartbeat every 10 s."""
    start = time.monotonic()
    last, last_print = "", start
    while True:
        done, state = await probe()
        now = time.monotonic()
        if state != last or now - last_print >= 10:
            say(f"  {what}: {state} ({now - start:.1f}s)")
            last, last_print = state, now
        if done:
            return
        if now - start > limit:
            raise ApiError(Code.UNAVAILABLE, f"timed out after {limit:.0f}s waiting for {what} (last: {state})")
        await asyncio.sleep(0.25)


async def vm_view(api: ApiClient, name: str) -> VMView | None:
    """The VM as ``get vm`` shows it; None when it is gone."""
    try:
        return (await api.call("vm", "get", NameRequest(name=name), VMReply)).item
    except ApiError as exc:
        if exc.code is Code.NOT_FOUND:
            return None
        raise


async def vm_state(api: ApiClient, name: str) -> tuple[str, str]:
    return state_of(await vm_view(api, name))


def state_of(view: VMView | None) -> tuple[str, str]:
    """(status, what to print) of a VM as read; ("Gone", ...) when it was not there."""
    if view is None:
        return "Gone", "deleted"
    vmi = view.vmi
    detail = f"{vmi.phase.value}{' on ' + vmi.node_name if vmi and vmi.node_name else ''}" if vmi else "no instance"
    if view.printable_status == "Stopped" and vmi is not None and vmi.node_name:
        # The guest is off, but its node may still be ending the launcher and removing the pod, and
        # a Halted VM's finished instance is about to go: stopped means all of that is done.
        if not vmi.torn_down or view.vm.spec.run_strategy is RunStrategy.HALTED:
            return "Stopping", f"Stopped ({detail}; the instance is being cleaned up)"
    return view.printable_status, f"{view.printable_status} ({detail})"
