"""The binder's log of binds: a bind after a quiet second is logged at once with its VM and node
bound, as any other line; binds that follow within the second are counted and logged as one line a
second (count, nodes, first and last VM), so a burst of thousands of binds is a few lines, not
thousands (py-spy: a structlog JSON line per bind was a tenth of the scheduler's time in a burst).
Each bind still has its own ``Scheduled`` event (scheduler.eventsink)."""

from __future__ import annotations

import asyncio

import structlog

log = structlog.get_logger()
WINDOW_S = 1.0


class BindLog:
    def __init__(self, window: float = WINDOW_S) -> None:
        self.window = window
        self._held: list[tuple[str, str]] = []  # (vmi, node) bound since the last line
        self._timer: asyncio.TimerHandle | None = None

    def bound(self, vmi: str, node: str) -> None:
        if self._timer is None:
            log.info("bound", vmi=vmi, node=node)
            self._timer = asyncio.get_running_loop().call_later(self.window, self.flush)
        else:
            self._held.append((vmi, node))

    def flush(self) -> None:
        """Log what is held; while binds keep coming, the next line a window later."""
        held, self._held = self._held, []
        self._timer = None
        if len(held) == 1:
            log.info("bound", vmi=held[0][0], node=held[0][1])
        elif held:
            log.info("bound", count=len(held), nodes=len({n for _, n in held}), first=held[0][0], last=held[-1][0])
        if held:
            self._timer = asyncio.get_running_loop().call_later(self.window, self.flush)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.flush()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
