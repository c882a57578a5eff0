"""``virtbus``: the command line, virtctl/kubectl style. Every verb is a NATS request anyone can send."""

from __future__ import annotations

import argparse
import asyncio
import os
import select
import signal
import sys

from ctl import commands, kubectlforms
from ctl.client import ApiClient, default_url
from proto.errors import ApiError


def add_options(p: argparse.ArgumentParser) -> None:
    """The CLI's own options, given before its command."""
    p.add_argument("--server", "-s", default=default_url(), help="NATS URL (env NATS_URL)")
    p.add_argument("--creds", default=None,
                   help="nkey seed file to authenticate with (env NATS_CREDS; default: the lab's admin)")
    kubectlforms.add_namespace_option(p)


def parser(command: str | None = None) -> argparse.ArgumentParser:
    """The CLI's parser: with `command`, only that command's (see ctl.commands); without, every command's."""
    p = argparse.ArgumentParser(prog="virtbus", description="Run KubeVirt VMs on a NATS-driven cluster.")
    add_options(p)
    sub = p.add_subparsers(dest="command", required=True)
    commands.add(sub, command)
    kubectlforms.add_namespace_options(p)
    return p


def parse_args(argv: list[str]) -> argparse.Namespace:
    return parser(commands.command_of(argv, add_options)).parse_args(argv)


async def run(args: argparse.Namespace) -> int:
    api = await ApiClient.connect(args.server, args.creds)
    try:
        return await commands.COMMANDS[args.command].coroutine()(api, args)
    finally:
        await api.close()


def stdout_reader_gone() -> bool:
    """Standard output is a pipe nobody reads any more (the kernel flags its writing end with POLLERR)."""
    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poll.poll(0))
    except (OSError, ValueError):  # no real file behind sys.stdout
        return False


def kubectl_forms(args: argparse.Namespace) -> argparse.Namespace:
    return kubectlforms.normalize(args, parse_args)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        args = kubectl_forms(args)
        command = commands.COMMANDS[args.command]
        code = command.function()(args) if command.sync else asyncio.run(run(args))
        sys.stdout.flush()  # here, not at the interpreter's exit, where a closed pipe cannot be caught
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 128 + signal.SIGINT
    except OSError as exc:
        if isinstance(exc, BrokenPipeError) and stdout_reader_gone():
            # its reader went (`virtbus get vmi x -o yaml | head`): end as quietly as `cat` would
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush there
            code = 128 + signal.SIGPIPE
        else:  # another pipe of the command's own among them: an error like any other
            print(f"error: {exc}", file=sys.stderr)
            code = 1
    sys.exit(code)
