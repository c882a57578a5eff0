"""Which module adds each command's arguments and runs it, so that a command imports its own module and no
other: a command's start-up is what its user waits for, and importing every command's module was a third of
it. ``virtbus --help`` (or a command this table does not know) builds them all, in this order."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from ctl.client import ApiClient

POWER_VERBS = ("pause", "unpause", "soft-reboot")  # ctl.power.VERBS; a test keeps the two alike


@dataclass(frozen=True)
class Command:
    """A command's module, its function adding the command's parser (some add several commands), and its
    function running it: ``async (api, args) -> int``, or ``(args) -> int`` for those that connect to
    nothing themselves (`sync`)."""

    module: str
    adder: str
    runner: str
    sync: bool = False

    def add(self, sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
        getattr(importlib.import_module(self.module), self.adder)(sub)

    def coroutine(self) -> Callable[[ApiClient, argparse.Namespace], Awaitable[int]]:
        """The runner of a command that connects (not `sync`): virtbus connects and hands it the client."""
        runner: Callable[[ApiClient, argparse.Namespace], Awaitable[int]] = self._runner()
        return runner

    def function(self) -> Callable[[argparse.Namespace], int]:
        """The runner of a `sync` command."""
        runner: Callable[[argparse.Namespace], int] = self._runner()
        return runner

    def _runner(self) -> Any:
        return getattr(importlib.import_module(self.module), self.runner)


def _each(module: str, adder: str, runner: str, *names: str, sync: bool = False) -> dict[str, Command]:
    return dict.fromkeys(names, Command(f"ctl.{module}", adder, runner, sync))


COMMANDS: dict[str, Command] = {
    **_each("manifestcmd", "add_parser", "cmd_apply", "apply"),
    **_each("getcmd", "add_parser", "run", "get"),
    **_each("lifecyclecmd", "add_parsers", "cmd_lifecycle", "start", "stop", "restart"),
    **_each("lifecyclecmd", "add_parsers", "cmd_delete", "delete"),
    **_each("power", "add_parsers", "cmd_power", *POWER_VERBS),
    **_each("console", "add_parser", "run", "console"),
    **_each("exposecmd", "add_parsers", "run", "expose", "unexpose"),
    **_each("fipcmd", "add_parser", "run", "fip"),
    **_each("imagecmd", "add_parser", "run", "image"),
    **_each("imageupload", "add_parser", "run", "image-upload"),
    **_each("volumecmd", "add_parser", "run", "volume"),
    **_each("snapshotcmd", "add_vm_parser", "run_vm", "vm"),
    **_each("instancetypecmd", "add_parser", "run", "instancetype"),
    **_each("workloadcmd", "add_parser", "scale", "scale"),
    **_each("preferencecmd", "add_parser", "run", "preference"),
    **_each("priorityclasscmd", "add_parser", "run", "priorityclass"),
    **_each("migratecmd", "add_parser", "run", "migrate", "migrate-cancel", "migration"),
    **_each("migrationpolicycmd", "add_parser", "run", "migrationpolicy"),
    **_each("vnc", "add_parser", "run", "vnc"),
    **_each("portforward", "add_parser", "run", "port-forward"),
    **_each("exportcmd", "add_parser", "run", "vmexport"),
    **_each("draincmd", "add_parsers", "run", "cordon", "uncordon", "drain"),
    **_each("nodemarks", "add_parser", "run", "label", "taint"),
    **_each("expandcmd", "add_parser", "run", "expand"),
    **_each("hotplugcmd", "add_parser", "run", "addvolume", "removevolume"),
    **_each("describe", "add_parser", "run", "describe"),
    **_each("createvm", "add_parser", "run", "create", sync=True),  # prints a manifest: nothing to connect for
    **_each("version", "add_parser", "run", "version"),
    **_each("sshcmd", "add_parser", "run", "ssh", sync=True),  # ssh takes over; its ProxyCommand connects
    **_each("webconsole", "add_parser", "run", "console-web"),
    **_each("lab", "add_parser", "run", "lab", sync=True),
}


def add(sub: argparse._SubParsersAction, command: str | None) -> None:  # type: ignore[type-arg]
    """The parsers of `command` (with those its module adds beside it), or of every command if None."""
    wanted = [COMMANDS[command]] if command is not None else list(COMMANDS.values())
    added: set[tuple[str, str]] = set()
    for each in wanted:
        if (each.module, each.adder) not in added:  # an adder adding several commands is called once
            added.add((each.module, each.adder))
            each.add(sub)


class _Unread(Exception):
    pass


class _Quiet(argparse.ArgumentParser):
    """A parser that neither prints nor exits on what it cannot read."""

    def error(self, message: str) -> NoReturn:
        raise _Unread(message)


def command_of(argv: list[str], options: Callable[[argparse.ArgumentParser], Any]) -> str | None:
    """The command argv names, if it is one of COMMANDS, read past the CLI's own options (`options` adds
    them, as to the CLI's parser, so that ``--server URL`` or ``-sURL`` is read as argparse will read it)."""
    first = _Quiet(add_help=False)
    options(first)
    first.add_argument("command", nargs="?")
    try:
        known, _ = first.parse_known_args(argv)
    except _Unread:  # an option without its value, say: the whole parser says what is wrong
        return None
    command: str | None = known.command
    return command if command in COMMANDS else None
