"""``virtbus vnc NAME``: a VM's screen over NATS, like ``virtctl vnc`` and ``virtctl screenshot``.

The proxy listens on 127.0.0.1 and opens a tunnel session (proto.vnc) to the VM's launcher for
each viewer that connects; ``--screenshot FILE`` writes the screen as a PNG. NATS permissions decide
who may: admin a full session, viewer a view-only one (the launcher drops its keys and pointer) and
screenshots.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from ctl.client import ApiClient
from ctl.listening import listen, port_number
from proto import subjects
from proto.api import NameRequest, VMIReply
from proto.errors import ApiError, Code
from proto.state import Phase
from proto.vnc import Screenshot, VncOpen, VncOpened
from servicekit.tunnel import Flow
from servicekit.tunnelpump import Inbound, LocalEnd, StreamEnd, run_tunnel


def add_parser(sub: Any) -> None:
    v = sub.add_parser("vnc", help="a VM's screen: a local VNC proxy, or a screenshot")
    v.add_argument("name")
    v.add_argument("--proxy-only", action="store_true", help="print {\"port\": P} and proxy (virtctl's flag)")
    v.add_argument("--port", type=port_number, default=0, help="local port on 127.0.0.1 (default: a free one)")
    v.add_argument("--screenshot", metavar="FILE", default=None, help="write the screen to FILE as a PNG and leave")
    v.add_argument("--view-only", action="store_true",
                   help="keys and pointer are dropped (what a viewer's credentials always get)")


async def running_node(api: ApiClient, name: str, screen: bool = False) -> str:
    """The node running the VM; ApiError when it does not run, or (screen) has no screen."""
    vmi = (await api.call("vmi", "get", NameRequest(name=name), VMIReply)).item
    if vmi.phase is not Phase.RUNNING or vmi.node_name is None:
        raise ApiError(Code.INVALID, f"VM {name} is not running ({vmi.phase.value})")
    if screen and not vmi.spec.graphics:
        raise ApiError(Code.INVALID, f"VM {name} has no screen (autoattachGraphicsDevice: false); "
                                     f"use its serial console: virtbus console {name}")
    return vmi.node_name


async def tunnel(api: ApiClient, name: str, local: LocalEnd, view_only: bool = False) -> str:
    """One viewer's connection joined to a new session on the VM's screen; returns why it ended.
    Credentials that may not open a full session (a viewer's) get a view-only one, and are told."""
    try:
        node = await running_node(api, name, screen=True)
    except BaseException:
        await local.close()
        raise
    if not view_only:
        try:
            inbound, up = await open_session(api, node, name, view_only=False)
        except ApiError as exc:
            if exc.code is not Code.FORBIDDEN:
                await local.close()
                raise
            print(f"vnc: view only: these credentials may not type on {name}'s screen", file=sys.stderr)
            view_only = True
    if view_only:
        try:
            inbound, up = await open_session(api, node, name, view_only=True)
        except BaseException:
            await local.close()
            raise
    return await run_tunnel(api.nc, local, inbound, up)


async def open_session(api: ApiClient, node: str, name: str, view_only: bool) -> tuple[Inbound, str]:
    """A new session with the launcher of name on node: its incoming frames, and where to send ours."""
    session = secrets.token_hex(16)
    inbound = await Inbound.subscribe(api.nc, subjects.vnc_session(node, name, session, "down", view_only))
    try:
        await api.request(subjects.vnc_open(node, name, view_only), VncOpen(session=session), VncOpened,
                          f"launcher of {name}", "is the VM running?")
    except BaseException:
        await inbound.unsubscribe()
        raise
    return inbound, subjects.vnc_session(node, name, session, "up", view_only)


async def open_tunnel(api: ApiClient, node: str, name: str, local: LocalEnd, flow: Flow | None = None,
                      view_only: bool = False) -> str:
    """A session with the launcher of name on node, joined to local until either side ends it."""
    try:
        inbound, up = await open_session(api, node, name, view_only)
    except BaseException:
        await local.close()
        raise
    return await run_tunnel(api.nc, local, inbound, up, flow)


async def screenshot(api: ApiClient, name: str) -> Screenshot:
    node = await running_node(api, name, screen=True)
    return await api.request(subjects.vnc_screenshot(node, name), b"{}", Screenshot, f"launcher of {name}",
                             "is the VM running?")


async def proxy(api: ApiClient, name: str, port: int, announce: Any, view_only: bool = False) -> None:
    """Serve viewers on 127.0.0.1:port until interrupted; announce(port) once listening."""
    await running_node(api, name, screen=True)  # say it at once when the VM does not run, or has no screen

    async def viewer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            why = await tunnel(api, name, StreamEnd(reader, writer), view_only)
        except ApiError as exc:
            why = str(exc)
        print(f"vnc: a viewer's session ended: {why}", file=sys.stderr)

    server = await listen(viewer, "127.0.0.1", port, "--port")
    announce(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


async def run(api: ApiClient, args: argparse.Namespace) -> int:
    if args.screenshot:
        start = time.monotonic()
        shot = await screenshot(api, args.name)
        Path(args.screenshot).write_bytes(shot.png)
        print(f"{args.screenshot}: {shot.width}x{shot.height} PNG of {args.name}'s screen "
              f"({len(shot.png)} bytes, {time.monotonic() - start:.2f}s)", file=sys.stderr)
        return 0

    def announce(port: int) -> None:
        if args.proxy_only:
            print(json.dumps({"port": port}), flush=True)
        else:
            print(f"The screen of {args.name} is at 127.0.0.1:{port} (VNC, no password): e.g. "
                  f"`vncviewer 127.0.0.1::{port}` or `remote-viewer vnc://127.0.0.1:{port}`; ^C ends the proxy",
                  flush=True)

    await proxy(api, args.name, args.port, announce, args.view_only)
    return 0
