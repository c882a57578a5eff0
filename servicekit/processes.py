"""Ending processes this code started, by PID: SIGTERM, a grace period, then SIGKILL.

A zombie counts as gone; one that is our child is reaped on the way (this project's processes
are often subreapers, and PID 1 in a sandbox may reap nothing)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path

POLL_S = 0.05


def alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    fields = stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def _send(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def end(pids: Iterable[int], timeout: float, is_alive: Callable[[int], bool] = alive) -> None:
    targets = [p for p in pids if is_alive(p)]
    _send(targets, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(is_alive(p) for p in targets) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    _send([p for p in targets if is_alive(p)], signal.SIGKILL)
    for pid in targets:
        alive(pid)  # reap what is ours


async def end_on_loop(pids: Iterable[int], grace: float, is_alive: Callable[[int], bool] = alive, *,
                      killed_patience: float = 10.0) -> tuple[list[int], list[int]]:
    """``end`` for a caller on an event loop: its waits are sleeps on the loop, not a blocked thread
    (a handler ending many launchers at once held every thread of its loop's pool for their grace).
    It also waits up to ``killed_patience`` for what it SIGKILLed. Returns the pids it had to
    SIGKILL and those still there after that (uninterruptible, say)."""

    async def left_after(targets: list[int], seconds: float) -> list[int]:
        deadline = time.monotonic() + seconds
        while True:  # a poll, as ``end``'s: is_alive may be any test (a launcher's is its own)
            left = [p for p in targets if is_alive(p)]
            if not left or time.monotonic() >= deadline:
                return left
            await asyncio.sleep(POLL_S)

    targets = [p for p in pids if is_alive(p)]
    _send(targets, signal.SIGTERM)
    killed = await left_after(targets, grace)
    _send(killed, signal.SIGKILL)
    return killed, await left_after(killed, killed_patience) if killed else []


def children(pid: int | str = "self") -> list[int]:
    """The process's children, as the kernel lists them per thread (CONFIG_PROC_CHILDREN)."""
    found: list[int] = []
    for listing in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(word) for word in listing.read_text().split()]
        except (OSError, ValueError):
            continue
    return sorted(set(found))


def command(pid: int) -> str:
    """The process's command line, for saying which one it is ("" once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()[:160]
    except OSError:
        return ""


def end_children(timeout: float, passes: int = 5) -> list[int]:
    """End every child left to this process, which is a subreaper: ending one may hand us its own
    children, so it goes round until none is left (at most ``passes`` times). Returns the pids it
    ended. For a subreaper's last act: what outlived the orderly stop is a leak (a QEMU whose
    libvirtd was ended while it started it, a capability probe), and would be left running under
    whatever reaps above us."""
    ended: list[int] = []
    for _ in range(passes):
        left = [pid for pid in children() if alive(pid)]
        if not left:
            break
        end(left, timeout)
        ended += left
    return ended


def started_at(pid: int | str = "self") -> float | None:
    """When the process began (wall clock): its start in /proc counts clock ticks since boot, which
    /proc/uptime gives now (btime, whole seconds, is off by up to one)."""
    fields = stat_fields(pid)
    if fields is None:
        return None
    try:
        ticks = int(fields[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None
    return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))


def cpu_seconds(pid: int | str = "self") -> float | None:
    """User plus system CPU seconds the process has used (its own threads, not its children's);
    None if it is gone."""
    fields = stat_fields(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stat_fields(pid: int | str = "self") -> list[str] | None:
    """/proc/<pid>/stat after the command name (field 3, the state, is [0]; proc(5)'s field N is
    [N - 3]); None if the process is gone. The name, in parentheses, may hold spaces and ')'."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields or None
