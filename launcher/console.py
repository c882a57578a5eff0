"""The serial console: its output copied from QEMU's log file into a JetStream stream, in order, and
keystrokes from the bus to the guest's serial port, from whoever holds the keyboard.

Kept in the stream, the log outlives the launcher: ``virtbus console NAME --log`` reads it back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from nats.js import JetStreamContext

from launcher.keyboard import Keyboard
from proto import subjects
from proto.api import decode_request, encode
from proto.console import RUN_HEADER, SESSION_HEADER, KeyboardRequest, check_session
from proto.errors import ApiError, ErrorReply

CHUNK = 32 * 1024
log = structlog.get_logger()


class ConsoleTail:
    def __init__(self, js: JetStreamContext, node: str, vmi: str, uid: str, log_file: Path) -> None:
        self.js = js
        self.subject = subjects.console_out(node, vmi)
        # Every run's output stays in the stream (a crash loop leaves something to read); each
        # chunk says which run printed it, so readers show the run they want.
        self.headers = {RUN_HEADER: uid}
        self.log_file = log_file
        self.offset = 0
        self.wake = asyncio.Event()  # set when the guest printed something (ConsoleInput sees it first)
        self.announced = False  # the serial socket is read: whatever the guest prints sets wake

    def listening(self, yes: bool) -> None:
        """ConsoleInput reads the serial socket (or no longer does)."""
        self.announced = yes
        self.wake.set()  # a look now: output may have come while nobody read the socket

    async def pump(self) -> int:
        """Publish what was written since the last call; returns the bytes sent. The offset moves
        chunk by chunk, as each is stored: a failed publish is sent again next time, once."""
        try:
            with open(self.log_file, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return 0
        sent = 0
        for start in range(0, len(data), CHUNK):
            chunk = data[start:start + CHUNK]
            await self.js.publish(self.subject, chunk, stream=subjects.STREAM_CONSOLE, headers=self.headers)
            self.offset += len(chunk)
            sent += len(chunk)
        return sent

    async def run(self, interval: float = 15.0, retry: float = 1.0, settle: float = 0.05) -> None:
        """Forever: publishes as soon as the guest prints (``wake``; QEMU writes its log file just
        after the socket, hence ``settle``), and every ``interval`` for output no wake announced
        (printed while nobody read the serial socket); a publish that fails (NATS away, the stream
        full) is retried, and said once. Once the socket is read (``announced``) and a look on the
        timer found nothing new, only the guest's next output wakes it: an idle console costs nothing."""
        failing = False
        timed_out = False
        while True:
            sent = 0
            try:
                sent = await self.pump()
                if failing:
                    log.info("console output published again", offset=self.offset)
                failing = False
            except Exception as exc:  # noqa: BLE001 - the console must outlive any outage
                if not failing:
                    log.warning("console output not published; retrying", error=str(exc) or type(exc).__name__)
                failing = True
                await asyncio.sleep(retry)
            quiet = self.announced and timed_out and not sent and not failing
            self.wake.clear()
            timed_out = False
            try:
                await asyncio.wait_for(self.wake.wait(), None if quiet else interval)
                await asyncio.sleep(settle)
            except TimeoutError:
                timed_out = True


class ConsoleInput:
    """Keystrokes from ``virtbus.console.<vmi>.in`` to the guest's serial port, from the session
    that holds the keyboard (proto.console) or from anyone while none does; the port's output is
    read and dropped here (the log file has it), so the guest never blocks on a full socket."""

    def __init__(self, nc: Any, node: str, vmi: str, socket_path: str,
                 on_output: Callable[[], None] = lambda: None,
                 on_listening: Callable[[bool], None] = lambda _: None) -> None:
        """on_output: the guest printed something; on_listening: the serial socket is read (True)
        or no longer (False)."""
        self.nc = nc
        self.on_output = on_output
        self.on_listening = on_listening
        self.node = node
        self.vmi = vmi
        self.socket_path = socket_path
        self.writer: asyncio.StreamWriter | None = None
        self.keyboard = Keyboard(vmi)

    async def run(self) -> None:
        reader, self.writer = await asyncio.open_unix_connection(self.socket_path)
        subs = [await self.nc.subscribe(subjects.console_in(self.node, self.vmi), cb=self._typed),
                await self.nc.subscribe(subjects.console_keyboard(self.node, self.vmi), cb=self._keyboard)]
        self.on_listening(True)
        try:
            while await reader.read(65536):
                self.on_output()
        finally:
            self.on_listening(False)
            for sub in subs:
                await sub.unsubscribe()
            self.writer.close()

    async def _typed(self, msg: Any) -> None:
        session = (msg.headers or {}).get(SESSION_HEADER)
        if not self.keyboard.accepts(session, time.monotonic()):
            log.info("console keystrokes dropped: another session holds the keyboard", bytes=len(msg.data))
            return
        if self.writer is not None and msg.data:
            self.writer.write(msg.data)
            await self.writer.drain()

    async def _keyboard(self, msg: Any) -> None:
        try:
            req = decode_request(msg.data, KeyboardRequest)
            check_session(req.session)
            now = time.monotonic()
            reply: Any = (self.keyboard.release(req.session) if req.release else
                          self.keyboard.claim(req.session, now))
        except ApiError as exc:
            reply = ErrorReply(error=exc.body())
        await msg.respond(encode(reply))
