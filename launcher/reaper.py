"""The launcher is the subreaper of what its libvirtd and QEMU leave behind (launcher.__main__ makes it
up): it reaps them, so libvirt, waiting for a process it ended to be gone, is never left waiting."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal


async def reap_orphans(fallback: float = 120.0) -> None:
    """Reap what libvirtd and QEMU leave to this launcher (their subreaper): libvirt waits for a
    process it ended to be gone, and an unreaped zombie never is. Started once our own
    subprocesses (qemu-img, genisoimage) are done, so it never takes their exit status. It wakes on
    SIGCHLD (an idle launcher polled 5 times a second), and every couple of minutes in case one was missed."""
    loop = asyncio.get_running_loop()
    child = asyncio.Event()
    loop.add_signal_handler(signal.SIGCHLD, child.set)
    try:
        while True:
            child.clear()
            try:
                while os.waitpid(-1, os.WNOHANG)[0] > 0:  # noqa: ASYNC222 - WNOHANG never blocks
                    pass
            except ChildProcessError:
                pass
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(child.wait(), fallback)
    finally:
        loop.remove_signal_handler(signal.SIGCHLD)
