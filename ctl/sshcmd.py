"""``virtbus ssh [USER@]vm/NAME``: this host's OpenSSH into a VM's guest through ``port-forward --stdio``
as its ProxyCommand, as ``virtctl ssh --local-ssh`` does; the guest is never reached any other way.
The command line is built here (pure), then ssh replaces this process."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from typing import Any

from ctl.portforward import target_name
from proto.errors import ApiError, Code


def add_parser(sub: Any) -> None:
    s = sub.add_parser("ssh", help="OpenSSH into a VM's guest over the bus (virtctl ssh --local-ssh)")
    s.add_argument("target", help="[USER@]vm/NAME (or vmi/NAME, or NAME)")
    s.add_argument("-l", "--username", default=None, help="the guest's user (or USER@ in the target)")
    s.add_argument("-p", "--port", type=int, default=22, help="the guest's ssh port")
    s.add_argument("-i", "--identity-file", default=None)
    s.add_argument("-c", "--command", dest="remote_command", default=None, help="run this instead of a shell")
    s.add_argument("--local-ssh-opts", action="append", default=[], help="one option for ssh (repeat), e.g. "
                                                                         "'-o StrictHostKeyChecking=no'")


def ssh_argv(args: argparse.Namespace, virtbus: list[str]) -> list[str]:
    """Pure: the ssh command line (virtbus: how to run this CLI, with its --server and --creds)."""
    user, at, target = args.target.rpartition("@")
    name = target_name(target)
    if at and args.username and user != args.username:
        raise ApiError(Code.BAD_REQUEST, "give the user once: USER@vm/NAME or --username", "username")
    if not 1 <= args.port <= 65535:
        raise ApiError(Code.INVALID, f"port {args.port} is out of range (1-65535)", "port")
    proxy = shlex.join([*virtbus, "port-forward", "--stdio", f"vm/{name}", str(args.port)])
    argv = ["ssh", "-o", f"ProxyCommand={proxy}", "-o", f"HostKeyAlias=vm.{name}.virtbus"]
    if args.identity_file:
        argv += ["-i", args.identity_file]
    for opt in args.local_ssh_opts:
        argv += shlex.split(opt)
    if user or args.username:
        argv += ["-l", user or args.username]
    argv.append(f"vm/{name}")
    if args.remote_command:
        argv.append(args.remote_command)
    return argv


def run(args: argparse.Namespace) -> int:
    if shutil.which("ssh") is None:
        raise ApiError(Code.UNAVAILABLE, "ssh (OpenSSH's client) is not installed here", "ssh")
    virtbus = [sys.executable, "-m", "ctl", "--server", args.server,
               *(["--creds", args.creds] if args.creds else [])]
    argv = ssh_argv(args, virtbus)
    sys.stdout.flush()
    os.execvp(argv[0], argv)  # ssh replaces this process: its exit status is the command's
