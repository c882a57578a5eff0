"""The serial console's output, copied from QEMU's log file into a JetStream stream, in order.

Kept in the stream, the log outlives the launcher: ``virtbus console NAME --log`` reads it back.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from nats.js import JetStreamContext

from proto import subjects

CHUNK = 32 * 1024


class ConsoleTail:
    def __init__(self, js: JetStreamContext, vmi: str, log_file: Path) -> None:
        self.js = js
        self.subject = subjects.console_out(vmi)
        self.log_file = log_file
        self.offset = 0

    async def reset(self) -> None:
        """Forget the output of earlier runs of this VMI."""
        await self.js.purge_stream(subjects.STREAM_CONSOLE, subject=self.subject)

    async def pump(self) -> int:
        """Publish what was written since the last call; returns the bytes sent."""
        try:
            with open(self.log_file, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return 0
        for start in range(0, len(data), CHUNK):
            await self.js.publish(self.subject, data[start:start + CHUNK], stream=subjects.STREAM_CONSOLE)
        self.offset += len(data)
        return len(data)

    async def run(self, interval: float = 0.2) -> None:
        while True:
            await self.pump()
            await asyncio.sleep(interval)


class ConsoleInput:
    """Keystrokes from ``virtbus.console.<vmi>.in`` to the guest's serial port; the port's output is
    read and dropped here (the log file has it), so the guest never blocks on a full socket."""

    def __init__(self, nc: Any, vmi: str, socket_path: str) -> None:
        self.nc = nc
        self.subject = subjects.console_in(vmi)
        self.socket_path = socket_path
        self.writer: asyncio.StreamWriter | None = None

    async def run(self) -> None:
        reader, self.writer = await asyncio.open_unix_connection(self.socket_path)
        sub = await self.nc.subscribe(self.subject, cb=self._typed)
        try:
            while await reader.read(65536):
                pass
        finally:
            await sub.unsubscribe()
            self.writer.close()

    async def _typed(self, msg: Any) -> None:
        if self.writer is not None and msg.data:
            self.writer.write(msg.data)
            await self.writer.drain()
