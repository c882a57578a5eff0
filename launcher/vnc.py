"""The VMI's screen on the bus: VNC tunnel sessions to QEMU's VNC socket, and screenshots.

``virtbus.vnc.<node>.<vmi>.open`` opens a session (proto.vnc): this launcher connects to QEMU's
socket, subscribes to the session's ``up`` frames and only then replies, then pumps both ways
(servicekit.tunnelpump); one opened on ``.view`` has its input taken out (launcher.rfbfilter).
``...screenshot`` answers with the screen as a PNG (libvirt's
virDomainScreenshot; QEMU's PNG, or its PPM converted here). Only this node may serve these subjects.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from nats.aio.client import Client

from launcher.png import as_png
from launcher.rfbfilter import ViewOnlyEnd
from proto import subjects
from proto.api import decode_request, encode
from proto.errors import ApiError, Code, ErrorReply
from proto.vnc import IDLE_TIMEOUT_S, MAX_SESSIONS, WINDOW, Screenshot, VncOpen, VncOpened, check_session
from servicekit.tunnel import Flow
from servicekit.tunnelpump import Inbound, LocalEnd, StreamEnd, run_tunnel, serve_until_cancelled

log = structlog.get_logger()
MAX_SCREENSHOT_BYTES = 900 * 1024  # under NATS's default max_payload (1 MiB), with the reply's base64


def libvirt_screenshot(conn: Any, dom: Any) -> bytes:
    """The first screen, as QEMU's PNG or PPM (blocking: run in a thread)."""
    stream = conn.newStream(0)
    chunks: list[bytes] = []

    def sink(_stream: Any, data: bytes, _opaque: Any) -> int:
        chunks.append(data)
        return len(data)

    try:
        dom.screenshot(stream, 0, 0)
        stream.recvAll(sink, None)
        stream.finish()
    except Exception:
        with contextlib.suppress(Exception):
            stream.abort()
        raise
    return b"".join(chunks)


class VncServer:
    def __init__(self, nc: Client, node: str, vmi: str, socket_path: str,
                 screenshot: Callable[[], Awaitable[bytes]], idle_timeout_s: float = IDLE_TIMEOUT_S,
                 screen: bool = True) -> None:
        self.nc, self.node, self.vmi, self.socket_path = nc, node, vmi, socket_path
        self.screenshot = screenshot
        self.screen = screen  # False: the VM has no graphics device (KubeVirt's autoattachGraphicsDevice)
        self.idle_timeout_s = idle_timeout_s
        self.sessions: dict[str, asyncio.Task[str]] = {}

    async def run(self) -> None:
        subs = [await self.nc.subscribe(subjects.vnc_open(self.node, self.vmi), cb=self._open),
                await self.nc.subscribe(subjects.vnc_open(self.node, self.vmi, view_only=True), cb=self._open_view),
                await self.nc.subscribe(subjects.vnc_screenshot(self.node, self.vmi), cb=self._screenshot)]
        await serve_until_cancelled(subs, self.sessions)

    async def _open_view(self, msg: Any) -> None:
        await self._open(msg, view_only=True)

    async def _open(self, msg: Any, view_only: bool = False) -> None:
        try:
            session = check_session(decode_request(msg.data, VncOpen).session)
            self._has_screen()
            if session in self.sessions:
                raise ApiError(Code.CONFLICT, f"VNC session {session} is open already")
            if len(self.sessions) >= MAX_SESSIONS:
                raise ApiError(Code.UNAVAILABLE, f"{self.vmi} has {MAX_SESSIONS} VNC sessions open; try later")
            try:
                reader, writer = await asyncio.open_unix_connection(self.socket_path)
            except OSError as exc:
                raise ApiError(Code.UNAVAILABLE, f"the VM's screen is not available: {exc.strerror}") from None
            up = subjects.vnc_session(self.node, self.vmi, session, "up", view_only)
            inbound = await Inbound.subscribe(self.nc, up)
            down = subjects.vnc_session(self.node, self.vmi, session, "down", view_only)
            local: LocalEnd = StreamEnd(reader, writer)
            if view_only:
                local = ViewOnlyEnd(local)
            self.sessions[session] = asyncio.create_task(self._serve(session, local, inbound, down))
            reply: Any = VncOpened(session=session, window=WINDOW)
        except ApiError as exc:
            reply = ErrorReply(error=exc.body())
        await msg.respond(encode(reply))

    async def _serve(self, session: str, local: LocalEnd, inbound: Inbound, down: str) -> str:
        log.info("vnc session opened", session=session, view_only=isinstance(local, ViewOnlyEnd))
        try:
            why = await run_tunnel(self.nc, local, inbound, down, Flow(idle_timeout_s=self.idle_timeout_s))
            log.info("vnc session closed", session=session, why=why)
            return why
        finally:
            self.sessions.pop(session, None)

    def _has_screen(self) -> None:
        if not self.screen:
            raise ApiError(Code.INVALID, f"{self.vmi} has no screen: its VM has autoattachGraphicsDevice: false; "
                                         "use its serial console (virtbus console)")

    async def _screenshot(self, msg: Any) -> None:
        try:
            self._has_screen()
            image = await self.screenshot()
            png, width, height = await asyncio.to_thread(as_png, image)
            if len(png) > MAX_SCREENSHOT_BYTES:
                raise ApiError(Code.UNAVAILABLE, f"the screenshot is {len(png)} bytes as PNG, too big for a reply")
            reply: Any = Screenshot(png=png, width=width, height=height)
        except ApiError as exc:
            reply = ErrorReply(error=exc.body())
        except Exception as exc:  # noqa: BLE001 - libvirt's error, said in the reply, never a traceback
            log.warning("screenshot failed", error=str(exc))
            reply = ErrorReply(error=ApiError(Code.UNAVAILABLE, f"no screenshot: {exc}").body())
        await msg.respond(encode(reply))
