"""The moment a launcher ends, from a pidfd on the handler's loop: its VMI is reconciled at once
(the pod torn down, the end reported) instead of at the next look of the agent's supervision loop,
up to SUPERVISE_S later. A stopped VM could be started again only after that teardown: with a look
every 2 s, a stop and a start in a row waited a second on average for nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from typing import Protocol

import structlog

log = structlog.get_logger()
SETTLE_S = 1.0  # a forked launcher's exit code comes from its fork server just after it exits
SETTLE_STEP_S = 0.02


class Watched(Protocol):
    pid: int

    def alive(self) -> bool: ...


class ExitWatch:
    def __init__(self, on_exit: Callable[[str], None]) -> None:
        self.on_exit = on_exit
        self.fds: dict[str, tuple[int, int]] = {}  # name -> (pid, pidfd)
        self._tasks: set[asyncio.Task[None]] = set()

    def watch(self, name: str, launcher: Watched) -> None:
        """From the loop's thread. Without pidfds (an old kernel), the supervision loop's looks remain."""
        known = self.fds.get(name)
        if known is not None and known[0] == launcher.pid:
            return
        self.unwatch(name)
        try:
            fd = os.pidfd_open(launcher.pid)
        except ProcessLookupError:
            self._ended(name, launcher)
            return
        except OSError as exc:
            log.info("no pidfd for the launcher; its end is noticed by polling", vmi=name, error=str(exc))
            return
        self.fds[name] = (launcher.pid, fd)
        asyncio.get_running_loop().add_reader(fd, self._readable, name, launcher)

    def unwatch(self, name: str) -> None:
        known = self.fds.pop(name, None)
        if known is not None:
            asyncio.get_running_loop().remove_reader(known[1])
            os.close(known[1])

    def close(self) -> None:
        for name in list(self.fds):
            self.unwatch(name)
        for task in self._tasks:
            task.cancel()

    def _readable(self, name: str, launcher: Watched) -> None:
        self.unwatch(name)
        self._ended(name, launcher)

    def _ended(self, name: str, launcher: Watched) -> None:
        task = asyncio.get_running_loop().create_task(self._settle(name, launcher))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _settle(self, name: str, launcher: Watched) -> None:
        """The process is gone; its exit code (a forked launcher's comes over the fork server's
        socket) may be a moment behind: reconciled once the launcher no longer counts as alive.
        alive() does not block (a non-blocking read, a poll, /proc), and is called on the loop as
        the agent calls it: never from two threads at once."""
        waited = 0.0
        with contextlib.suppress(Exception):
            while waited < SETTLE_S and launcher.alive():
                await asyncio.sleep(SETTLE_STEP_S)
                waited += SETTLE_STEP_S
        self.on_exit(name)
