"""``virtbus console NAME``: the serial console over NATS, like ``virtctl console``.

Output comes from the VMI's console stream (any number may watch); keystrokes go to
``virtbus.console.<vmi>.in`` from the one session holding the keyboard (proto.console); the others
watch read-only and take the keyboard when it is free. ^] leaves; the session ends by itself when
the VM stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import sys
import termios
import tty
from dataclasses import dataclass
from typing import Any

from nats.js.api import DeliverPolicy

from ctl import consolelog
from ctl.client import ApiClient
from proto import subjects
from proto.console import LEASE_SECONDS, SESSION_HEADER, KeyboardGrant, KeyboardRequest
from proto.errors import ApiError, Code

ESCAPE = b"\x1d"  # ^]


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    c = sub.add_parser("console", help="a VM's serial console")
    c.add_argument("name")
    c.add_argument("--log", action="store_true", help="print the serial log so far")
    c.add_argument("--until", help="with --log: keep printing until this text appears")
    c.add_argument("--send", default=None, help="type this text (backslash escapes like \\n work) and leave")
    c.add_argument("--timeout", type=float, default=300.0)


async def run(api: ApiClient, args: argparse.Namespace) -> int:
    if args.send is not None:
        await send(api, args.name, args.send)
        return 0
    if not args.log:
        return await interactive(api, args.name)
    if not args.until:
        sys.stdout.buffer.write(await api.console_log(args.name))
        sys.stdout.flush()
        return 0

    def write(data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()

    await consolelog.follow(api, args.name, args.until, args.timeout, write)
    return 0


@dataclass(frozen=True)
class Target:
    """A running VMI's console: its subjects name the node that runs it."""

    node: str
    name: str


async def _keyboard(api: ApiClient, t: Target, session: str, release: bool = False) -> None:
    """Claim (or renew, or release) the console's keyboard; ApiError(CONFLICT) while another holds it."""
    await api.request(subjects.console_keyboard(t.node, t.name), KeyboardRequest(session=session, release=release),
                      KeyboardGrant, f"console of {t.name}", "is the VM running?")


async def _type(api: ApiClient, t: Target, session: str, data: bytes) -> None:
    await api.nc.publish(subjects.console_in(t.node, t.name), data, headers={SESSION_HEADER: session})


async def send(api: ApiClient, name: str, text: str) -> None:
    """Type text (backslash escapes decoded) unless another session holds the keyboard."""
    t = await _target(api, name)
    session = secrets.token_hex(8)
    await _keyboard(api, t, session)
    try:
        await _type(api, t, session, text.encode().decode("unicode_escape").encode())
        await api.nc.flush()
    finally:
        await _keyboard(api, t, session, release=True)


async def _running_on(api: ApiClient, name: str) -> str | None:
    """The node running the VM, None when it does not run."""
    vmi = await api.vmi_or_none(name)
    return vmi.node_name if vmi is not None and vmi.phase.value == "Running" else None


async def _target(api: ApiClient, name: str) -> Target:
    node = await _running_on(api, name)
    if node is None:
        raise ApiError(Code.INVALID, f"VM {name} is not running")
    return Target(node, name)


async def interactive(api: ApiClient, name: str) -> int:
    t = await _target(api, name)
    out = sys.stdout.buffer
    js = api.nc.jetstream()

    async def show(msg: Any) -> None:
        out.write(msg.data)
        out.flush()

    sub = await js.subscribe(subjects.console_out(t.node, name), ordered_consumer=True,
                             deliver_policy=DeliverPolicy.NEW,
                             cb=show)
    print(f"Successfully connected to {name} console. The escape sequence is ^]", file=sys.stderr)
    session = secrets.token_hex(8)
    holding = await _hold(api, t, session, None)
    loop = asyncio.get_running_loop()
    keys: asyncio.Queue[bytes] = asyncio.Queue()
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd) if os.isatty(fd) else None
    if saved is not None:
        tty.setraw(fd)
    loop.add_reader(fd, lambda: keys.put_nowait(os.read(fd, 1024)))
    renew_every = LEASE_SECONDS / 3
    next_renew = loop.time() + renew_every
    try:
        while True:
            try:
                data = await asyncio.wait_for(keys.get(), timeout=max(0.1, min(1.0, next_renew - loop.time())))
            except TimeoutError:
                if await _running_on(api, name) != t.node:
                    print("\r\n[the VM stopped; console closed]", file=sys.stderr)
                    return 0
                data = None
            if loop.time() >= next_renew:  # renew the lease, or try again to get it
                holding = await _hold(api, t, session, holding)
                next_renew = loop.time() + renew_every
            if data is None:
                continue
            if not data or ESCAPE in data:
                return 0
            if holding:
                await _type(api, t, session, data)
    finally:
        loop.remove_reader(fd)
        if saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        await sub.unsubscribe()
        if holding:
            with contextlib.suppress(ApiError):
                await _keyboard(api, t, session, release=True)


async def _hold(api: ApiClient, t: Target, session: str, holding: bool | None) -> bool:
    """Claim or renew the keyboard; says so when this session gains or loses it."""
    try:
        await _keyboard(api, t, session)
        now = True
    except ApiError as exc:
        if exc.code is not Code.CONFLICT:
            return bool(holding)  # a passing fault; the VM-stopped check ends the session if it is one
        now = False
    if now != holding:
        note = ("[you have the keyboard]" if now else
                "[read only: another session is typing; you watch, and get the keyboard when it lets go]")
        print(f"\r\n{note}\r", file=sys.stderr)
    return now
