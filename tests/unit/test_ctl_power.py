"""The CLI's pause, unpause and soft-reboot: virtctl's ways of naming the target, and their flags."""

from __future__ import annotations

import pytest

from ctl import cli, commands, power
from proto.errors import ApiError, Code


@pytest.mark.parametrize(("words", "expected"), [
    (["testvm"], ("vm", "testvm")), (["vm", "testvm"], ("vm", "testvm")), (["vmi", "testvm"], ("vmi", "testvm")),
    (["VirtualMachineInstance", "testvm"], ("vmi", "testvm")),
])
def test_target(words: list[str], expected: tuple[str, str]) -> None:
    assert power.target(words) == expected


@pytest.mark.parametrize("words", [["node", "node1"], ["vm", "a", "b"]])
def test_a_target_that_is_not_a_vm_is_refused(words: list[str]) -> None:
    with pytest.raises(ApiError) as info:
        power.target(words)
    assert info.value.code is Code.BAD_REQUEST


def test_the_verbs_parse() -> None:
    args = cli.parser().parse_args(["pause", "vm", "testvm", "--wait", "--timeout", "30"])
    assert (args.command, args.target, args.wait, args.timeout) == ("pause", ["vm", "testvm"], True, 30.0)
    assert cli.parser().parse_args(["unpause", "testvm"]).wait is False
    reboot = cli.parser().parse_args(["soft-reboot", "testvm"])
    assert reboot.target == ["testvm"] and not hasattr(reboot, "wait")
    assert all(commands.COMMANDS[verb].coroutine() is power.cmd_power for verb in ("pause", "unpause", "soft-reboot"))
