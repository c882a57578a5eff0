"""A process's long-running parts kept running: one that fails (or returns, which a forever loop should
never do) is logged with its name and started again after a pause, instead of ending unseen while the
rest of the process carries on without it (a handler without its guest fence, its node ports...).
The pause doubles while it keeps ending soon after each start, up to a minute."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger()
FIRST_PAUSE_S = 2.0
LONGEST_PAUSE_S = 60.0


async def keep_running(name: str, run: Callable[[], Awaitable[None]], *, first_pause: float = FIRST_PAUSE_S,
                       longest_pause: float = LONGEST_PAUSE_S, clock: Callable[[], float] = time.monotonic,
                       sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
    """run() again and again until cancelled; each end but a cancellation logged as an error."""
    pause = first_pause
    while True:
        started = clock()
        failure: BaseException | None = None
        try:
            await run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - said below, with its traceback, and run again
            failure = exc
        if clock() - started > longest_pause:  # it ran a good while: start it again soon
            pause = first_pause
        if failure is None:
            log.error("a part of the process returned; starting it again", part=name, after_s=pause)
        else:
            log.error("a part of the process failed; starting it again", part=name, after_s=pause,
                      exc_info=failure)
        await sleep(pause)
        pause = min(pause * 2, longest_pause)
