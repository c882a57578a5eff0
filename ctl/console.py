"""``virtbus console NAME``: the serial console over NATS, like ``virtctl console``.

Output comes from the VMI's console stream (any number may watch); keystrokes go to
``virtbus.console.<vmi>.in``. ^] leaves; the session ends by itself when the VM stops.
"""

from __future__ import annotations

import asyncio
import os
import sys
import termios
import tty
from typing import Any

from nats.js.api import DeliverPolicy

from ctl.client import ApiClient
from proto import subjects
from proto.api import NameRequest, VMIReply
from proto.errors import ApiError, Code

ESCAPE = b"\x1d"  # ^]


async def send(api: ApiClient, name: str, text: str) -> None:
    await api.nc.publish(subjects.console_in(name), text.encode().decode("unicode_escape").encode())
    await api.nc.flush()


async def _running(api: ApiClient, name: str) -> bool:
    try:
        vmi = (await api.call("vmi", "get", NameRequest(name=name), VMIReply)).item
    except ApiError as exc:
        if exc.code is Code.NOT_FOUND:
            return False
        raise
    return vmi.phase.value == "Running"


async def interactive(api: ApiClient, name: str) -> int:
    if not await _running(api, name):
        raise ApiError(Code.INVALID, f"VM {name} is not running")
    out = sys.stdout.buffer
    js = api.nc.jetstream()

    async def show(msg: Any) -> None:
        out.write(msg.data)
        out.flush()

    sub = await js.subscribe(subjects.console_out(name), ordered_consumer=True, deliver_policy=DeliverPolicy.NEW,
                             cb=show)
    print(f"Successfully connected to {name} console. The escape sequence is ^]", file=sys.stderr)
    loop = asyncio.get_running_loop()
    keys: asyncio.Queue[bytes] = asyncio.Queue()
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd) if os.isatty(fd) else None
    if saved is not None:
        tty.setraw(fd)
    loop.add_reader(fd, lambda: keys.put_nowait(os.read(fd, 1024)))
    try:
        while True:
            try:
                data = await asyncio.wait_for(keys.get(), timeout=1.0)
            except TimeoutError:
                if not await _running(api, name):
                    print("\r\n[the VM stopped; console closed]", file=sys.stderr)
                    return 0
                continue
            if not data or ESCAPE in data:
                return 0
            await api.nc.publish(subjects.console_in(name), data)
    finally:
        loop.remove_reader(fd)
        if saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        await sub.unsubscribe()
