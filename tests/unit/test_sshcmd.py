"""`virtbus ssh` (ctl.sshcmd): the ssh command line virtctl ssh --local-ssh would run, which this host's
OpenSSH takes as it is (`ssh -G` reads it without connecting): the guest only through port-forward."""

from __future__ import annotations

import shlex
import shutil
import subprocess

import pytest

from ctl import cli
from ctl.sshcmd import ssh_argv
from proto.errors import ApiError

VIRTBUS = ["/venv/bin/python", "-m", "ctl", "--server", "nats://127.0.0.1:4222"]


def argv(*words: str) -> list[str]:
    return ssh_argv(cli.parser().parse_args(["ssh", *words]), VIRTBUS)


def test_the_command_line() -> None:
    got = argv("cirros@vm/testvm", "-i", "/k/id", "-c", "uname -a", "--local-ssh-opts", "-o StrictHostKeyChecking=no")
    assert got[:2] == ["ssh", "-o"]
    assert shlex.split(got[2].removeprefix("ProxyCommand=")) == [*VIRTBUS, "port-forward", "--stdio", "vm/testvm", "22"]
    assert got[3:] == ["-o", "HostKeyAlias=vm.testvm.virtbus", "-i", "/k/id", "-o", "StrictHostKeyChecking=no",
                       "-l", "cirros", "vm/testvm", "uname -a"]
    assert argv("testvm", "-p", "2222", "-l", "root")[-3:] == ["-l", "root", "vm/testvm"]
    assert argv("cirros@vm/testvm/default")[-3:] == ["-l", "cirros", "vm/testvm"]  # virtctl's /NAMESPACE
    assert "2222" in argv("testvm", "-p", "2222")[2]
    assert cli.parser().parse_args(["ssh", "vm/x", "-c", "true"]).command == "ssh"  # -c is the guest's, not ours


@pytest.mark.parametrize("words", [["pod/x"], ["a@vm/x", "-l", "b"], ["vm/x", "-p", "0"]])
def test_what_it_refuses(words: list[str]) -> None:
    with pytest.raises(ApiError):
        argv(*words)


@pytest.mark.skipif(shutil.which("ssh") is None, reason="needs OpenSSH's client")
def test_openssh_reads_it_as_meant() -> None:
    got = argv("cirros@vm/testvm", "-p", "2222")
    config = subprocess.run([got[0], "-G", *got[1:]], capture_output=True, text=True, check=True).stdout
    said = dict(line.split(" ", 1) for line in config.splitlines() if " " in line)
    assert said["user"] == "cirros" and said["hostname"] == "vm/testvm"
    assert said["proxycommand"].endswith("port-forward --stdio vm/testvm 2222")
    assert said["hostkeyalias"] == "vm.testvm.virtbus"
