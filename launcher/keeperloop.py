"""The loop of a launcher's keepers (launcher.power, launcher.hotplug): each looks at the domain when
woken (its VMI changed, or the domain did), and looks again a moment later when a look failed (libvirt's
errors: its libvirtd may be restarting) or left something to do, at once if woken before then."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog

log = structlog.get_logger()


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An error as one line of bounded length (libvirt's run over several)."""
    return (str(exc).splitlines() or [type(exc).__name__])[0][:limit]


async def keep(wake: asyncio.Event, look: Callable[[], Awaitable[bool]], *, what: str, retry: float,
               beside: Coroutine[Any, Any, None] | None = None) -> None:
    """look: one look, True when nothing is left to do. beside: what wakes it besides its owner (a
    follow of records, launcher.volumerecords), run for as long as the loop."""
    task = asyncio.create_task(beside) if beside is not None else None
    try:
        await _loop(wake, look, what=what, retry=retry)
    finally:
        if task is not None:
            task.cancel()


async def _loop(wake: asyncio.Event, look: Callable[[], Awaitable[bool]], *, what: str, retry: float) -> None:
    while True:
        await wake.wait()
        wake.clear()
        try:
            settled = await look()
        except Exception as exc:
            log.warning(f"{what} failed; retrying", error=first_line(exc, 200))
            settled = False
        if not settled:  # again after the retry, or at once when woken meanwhile (what it waits for came)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(retry):
                    await wake.wait()
            wake.set()
