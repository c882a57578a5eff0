"""The CLI's own listeners (the VNC proxy, the web console): an address that is malformed, taken or
not this host's is a typed error naming the flag, never a traceback."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable

from proto.errors import ApiError, Code

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def port_number(text: str) -> int:
    """argparse's type of a port: 0 (any free one) to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is out of range (0-65535; 0: a free one)")
    return port


def listen_address(text: str) -> tuple[str, int]:
    """argparse's type of ADDRESS:PORT (ADDRESS empty: loopback)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r} is not ADDRESS:PORT")
    return host.strip("[]") or "127.0.0.1", port_number(port)


async def listen(handler: Handler, host: str, port: int, flag: str) -> asyncio.Server:
    try:
        return await asyncio.start_server(handler, host, port)
    except OSError as exc:  # taken (EADDRINUSE), not this host's (EADDRNOTAVAIL), a name that resolves to nothing
        raise ApiError(Code.INVALID, f"cannot listen on {host}:{port}: {exc.strerror or exc}", field=flag) from None
