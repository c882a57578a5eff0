"""Sysctls of a network namespace, written from this process: the calling thread enters the
namespace (servicekit.netns_socket.run_in), where /proc/sys/net is that namespace's, and comes back.
What ``ip netns exec NS sysctl -w`` did with two programs started per setting."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from servicekit.netns_socket import run_in

PROC_SYS = Path("/proc/sys")


def write(netns: str | None, settings: Iterable[str], *, missing_ok: bool = False) -> None:
    """``key=value`` each, as sysctl -w takes them; missing_ok: a key the kernel lacks is skipped
    (sysctl -e). OSError if a setting is refused (or missing, without missing_ok)."""
    pairs = []
    for setting in settings:
        key, sep, value = setting.partition("=")
        if not sep or not key or "/" in key or ".." in key:
            raise ValueError(f"{setting!r} is not a sysctl key=value")
        pairs.append((PROC_SYS / key.replace(".", "/"), value))

    def work() -> None:
        for path, value in pairs:
            try:
                path.write_text(value)
            except FileNotFoundError:
                if not missing_ok:
                    raise
    run_in(netns, work)
