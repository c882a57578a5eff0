"""``virtbus console-web``: a web page listing the VMs, each screen opened in the browser with noVNC
(Debian's ``novnc`` files, served here) over a WebSocket this server joins to the VM's VNC tunnel
(proto.vnc). It acts with the CLI's credentials (--creds), so NATS decides who may do what: with
an admin's the screens take keys and pointer, with a viewer's they are only to look at. It listens
on loopback unless told otherwise: whoever reaches it acts with those credentials.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import html
import mimetypes
import sys
import urllib.parse
from pathlib import Path
from typing import Any

from ctl import vnc
from ctl.client import ApiClient
from ctl.listening import listen, listen_address
from ctl.websocket import WebSocketEnd, accept_key
from proto.api import VMIList
from proto.errors import ApiError
from proto.subjects import is_dns1123_label

NOVNC = Path("/usr/share/novnc")
MAX_HEAD = 16 * 1024

LIST_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>virtbus</title></head>
<body><h1>Virtual machines</h1><table>
<tr><th>NAME</th><th>PHASE</th><th>NODE</th><th></th></tr>{rows}</table></body></html>"""
ROW = ('<tr><td>{name}</td><td>{phase}</td><td>{node}</td><td>{links}</td></tr>')
LINKS = '<a href="/screen/{name}">screen</a> · <a href="/novnc/vnc.html?path=ws/{name}&autoconnect=1">noVNC</a>'
NO_SCREEN = "no screen (serial console only)"  # autoattachGraphicsDevice: false
# noVNC's RFB on a bare canvas, 1:1; the title says the session's state (the tests wait on it).
SCREEN_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{name}: connecting</title>
<style>body {{ margin: 0; background: #333; }} #screen {{ width: 100vw; height: 100vh; }}</style></head>
<body><div id="screen"></div><script type="module">
import RFB from "/novnc/core/rfb.js";
const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/{name}";
const rfb = new RFB(document.getElementById("screen"), url);
rfb.addEventListener("connect", () => {{ document.title = "{name}: connected"; }});
rfb.addEventListener("disconnect", (e) => {{ document.title = "{name}: disconnected"; }});
</script></body></html>"""


def add_parser(sub: Any) -> None:
    w = sub.add_parser("console-web", help="a web page of the VMs and their screens (noVNC)")
    w.add_argument("--listen", default="127.0.0.1:8080", type=listen_address, help="ADDRESS:PORT (port 0: a free one)")
    w.add_argument("--view-only", action="store_true", help="screens only to look at, whatever the credentials")


async def _respond(writer: asyncio.StreamWriter, status: str, body: bytes, kind: str = "text/html") -> None:
    writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                 "Cache-Control: no-store\r\nConnection: close\r\n\r\n".encode() + body)
    with contextlib.suppress(ConnectionError):
        await writer.drain()


def static_file(path: str) -> Path | None:
    """A file of noVNC's, never anything outside it."""
    root = NOVNC.resolve()
    target = (root / path).resolve()
    return target if target.is_relative_to(root) and target.is_file() else None


class WebConsole:
    def __init__(self, api: ApiClient, view_only: bool = False) -> None:
        self.api = api
        self.view_only = view_only

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        if len(parts) != 3 or parts[0] != "GET":
            await _respond(writer, "405 Method Not Allowed", b"GET only\n", "text/plain")
        else:
            await self.route(urllib.parse.urlsplit(parts[1]).path, headers, reader, writer)
        writer.close()

    async def route(self, path: str, headers: dict[str, str], reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        name = path.rsplit("/", 1)[-1]
        if path == "/":
            await _respond(writer, "200 OK", await self.list_page())
        elif path.startswith("/screen/") and is_dns1123_label(name):
            await _respond(writer, "200 OK", SCREEN_PAGE.format(name=name).encode())
        elif path.startswith("/novnc/") and (file := static_file(urllib.parse.unquote(path[len("/novnc/"):]))):
            kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
            if file.suffix == ".js":
                kind = "text/javascript"  # ES modules need a JavaScript type
            await _respond(writer, "200 OK", file.read_bytes(), kind)
        elif path.startswith("/ws/") and is_dns1123_label(name) and headers.get("upgrade", "").lower() == "websocket":
            await self.screen(name, headers, reader, writer)
        else:
            await _respond(writer, "404 Not Found", b"not found\n", "text/plain")

    async def list_page(self) -> bytes:
        try:
            items = (await self.api.call("vmi", "list", {}, VMIList)).items
        except ApiError as exc:
            return f"<p>error: {html.escape(str(exc))}</p>".encode()
        rows = "".join(ROW.format(name=html.escape(v.name), phase=html.escape(v.phase.value),
                                  node=html.escape(v.node_name or ""),
                                  links=LINKS.format(name=html.escape(v.name)) if v.spec.graphics else NO_SCREEN)
                       for v in sorted(items, key=lambda v: v.name))
        return LIST_PAGE.format(rows=rows).encode()

    async def screen(self, name: str, headers: dict[str, str], reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        key = headers.get("sec-websocket-key", "")
        protocols = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
        extra = "Sec-WebSocket-Protocol: binary\r\n" if "binary" in protocols else ""
        writer.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Accept: {accept_key(key)}\r\n{extra}\r\n").encode())
        await writer.drain()
        try:
            why = await vnc.tunnel(self.api, name, WebSocketEnd(reader, writer), self.view_only)
        except ApiError as exc:
            why = str(exc)
        print(f"console-web: the screen of {name} closed: {why}", file=sys.stderr)


async def run(api: ApiClient, args: argparse.Namespace) -> int:
    host, port = args.listen
    if not NOVNC.is_dir():
        print(f"console-web: {NOVNC} is missing (apt-get install novnc): the screens will not open", file=sys.stderr)
    server = await listen(WebConsole(api, args.view_only).handle, host, port, "--listen")
    bound = server.sockets[0].getsockname()
    print(f"virtbus web console on http://{bound[0]}:{bound[1]}/", flush=True)
    async with server:
        await server.serve_forever()
    return 0
