"""The serial console's output, copied from QEMU's log file into a JetStream stream, in order.

Kept in the stream, the log outlives the launcher: ``virtbus console NAME --log`` reads it back.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

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
