"""``virtbus pause|unpause [vm|vmi] NAME`` and ``virtbus soft-reboot NAME``, as virtctl's."""

from __future__ import annotations

import argparse

from ctl.client import ApiClient
from ctl.progress import ask, vm_state, wait_for
from ctl.stdout import say
from proto.errors import ApiError, Code

VERBS = {"pause": "pause a VM's guest (its instance stays Running; the VM prints Paused)",
         "unpause": "let a paused guest run again (also one the hypervisor paused on a disk error)",
         "soft-reboot": "reboot a VM's guest by ACPI: the same instance, the guest booted afresh"}
# where --wait waits for: what `get vms` prints once it is done
TARGETS = {"pause": "Paused", "unpause": "Running"}
_KINDS = {"vm": "vm", "vms": "vm", "virtualmachine": "vm", "vmi": "vmi", "vmis": "vmi",
          "virtualmachineinstance": "vmi"}
# a VM in one of these will never get to the target: say so instead of waiting it out
_HOPELESS = {"Stopped", "Stopping", "Failed", "CrashLoopBackOff", "Gone"}


def target(words: list[str]) -> tuple[str, str]:
    """(kind, name) from ``NAME`` or ``vm NAME`` / ``vmi NAME``, as virtctl takes them."""
    if len(words) == 1:
        return "vm", words[0]
    if len(words) == 2 and words[0].lower() in _KINDS:
        return _KINDS[words[0].lower()], words[1]
    raise ApiError(Code.BAD_REQUEST, f"expected NAME, vm NAME or vmi NAME, not {' '.join(words)!r}")


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    for verb, text in VERBS.items():
        c = sub.add_parser(verb, help=text)
        c.add_argument("target", nargs="+", metavar="[vm|vmi] NAME")
        if verb in TARGETS:
            c.add_argument("--wait", action="store_true", help="wait until done, showing progress")
        c.add_argument("--timeout", type=float, default=120.0)


async def cmd_power(api: ApiClient, args: argparse.Namespace) -> int:
    kind, name = target(args.target)
    verb = args.command
    wait = getattr(args, "wait", False)
    say(await ask(api, kind, verb, name, wait=wait, patience=args.timeout))
    if not wait:
        return 0
    goal = TARGETS[verb]

    async def probe() -> tuple[bool, str]:
        status, detail = await vm_state(api, name)
        if status in _HOPELESS:
            raise ApiError(Code.INVALID, f"VM {name} is {detail}; it will not be {goal}")
        return status == goal, detail

    await wait_for(name, probe, args.timeout)
    return 0
