"""The CLI builds only the parser of the command it runs (ctl.commands): what it reads from argv is what
the whole parser would read, every command is in the table, and a command imports no other's module."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from ctl import cli, commands, power

ARGVS = [
    ["get", "vms"],
    ["-s", "nats://127.0.0.1:1", "get", "vmi", "testvm", "-o", "yaml"],
    ["--server=nats://127.0.0.1:1", "--creds", "/tmp/x.nk", "-n", "default", "start", "testvm", "--wait"],
    ["-snats://127.0.0.1:2", "get", "vms", "-l", "app=web"],
    ["stop", "testvm", "--force", "--grace-period", "0"],
    ["delete", "vmi", "testvm", "--wait"],
    ["delete", "vmsnapshot", "snap1"],  # lives under `vm snapshot delete`: parsed again as that
    ["get", "vmsnapshots", "-o", "json"],
    ["get", "pvc"],
    ["pause", "vm", "testvm"],
    ["soft-reboot", "testvm"],
    ["console", "testvm", "--log", "--until", "login:"],
    ["expose", "vm", "testvm", "--port", "80", "--name", "web"],
    ["unexpose", "vm", "testvm", "--port", "80"],
    ["fip", "create", "192.0.2.10", "--network", "provider"],
    ["fip", "attach", "192.0.2.10", "vm", "testvm"],
    ["apply", "-f", "examples/vm.yaml"],
    ["migrate", "testvm"],
    ["cordon", "node1"],
    ["label", "node", "node1", "zone=a"],
    ["create", "vm", "--name", "made"],
    ["vm", "snapshot", "list"],
    ["lab", "status"],
    ["version"],
]


def namespace(argv: list[str], parse: argparse.ArgumentParser) -> dict[str, object]:
    return vars(cli.kubectl_forms(parse.parse_args(argv)))


@pytest.mark.parametrize("argv", ARGVS, ids=" ".join)
def test_a_command_reads_argv_as_the_whole_parser_does(argv: list[str]) -> None:
    assert vars(cli.kubectl_forms(cli.parse_args(argv))) == namespace(argv, cli.parser())


def test_every_command_the_cli_has_is_in_the_table_and_runs() -> None:
    whole = cli.parser()
    sub = next(a for a in whole._actions if isinstance(a, argparse._SubParsersAction))
    assert list(sub.choices) == list(commands.COMMANDS)  # the same commands, in the table's order for --help
    for name, command in commands.COMMANDS.items():
        assert callable(command.function() if command.sync else command.coroutine()), name
        only = next(a for a in cli.parser(name)._actions if isinstance(a, argparse._SubParsersAction))
        assert name in only.choices and len(only.choices) <= 4, name  # its own, and its module's others


def test_the_power_verbs_are_the_power_modules() -> None:
    assert commands.POWER_VERBS == tuple(power.VERBS)


@pytest.mark.parametrize(("argv", "command"), [
    (["get", "vms"], "get"),
    (["-s", "nats://h:4222", "get"], "get"),
    (["--serv", "nats://h:4222", "start", "x"], "start"),  # argparse's abbreviations, as the CLI takes them
    (["--creds=/tmp/c", "-n", "default", "vnc", "x"], "vnc"),
    (["-h"], None),
    ([], None),
    (["nosuch", "x"], None),
    (["-s"], None),  # no value: left to the whole parser, which says so
    (["--bogus", "get"], "get"),
])
def test_the_command_is_read_past_the_clis_own_options(argv: list[str], command: str | None,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert commands.command_of(argv, cli.add_options) == command
    assert capsys.readouterr() == ("", "")


def test_an_unknown_command_is_refused_naming_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.parse_args(["nosuch"])
    err = capsys.readouterr().err
    assert "invalid choice: 'nosuch'" in err and "'migrationpolicy'" in err and "'lab'" in err


def test_get_vms_imports_no_other_commands_nor_other_kinds_modules() -> None:
    code = ("import sys; from ctl import cli, commands; args = cli.kubectl_forms(cli.parse_args(['get', 'vms']));"
            " commands.COMMANDS[args.command].coroutine(); print(' '.join(sorted(sys.modules)))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                timeout=60).stdout.split())
    assert "ctl.getcmd" in loaded
    assert not loaded & {"ctl.lab", "ctl.createvm", "ctl.clonecmd", "ctl.describe", "ctl.exportcmd", "ctl.imagecmd",
                         "ctl.workloadcmd", "ctl.routecmd", "ctl.servicecmd", "ctl.networkcmd", "ctl.portforward",
                         "ctl.watches", "proto.stored", "proto.resources", "servicekit.store", "yaml"}
