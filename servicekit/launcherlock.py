"""One launcher per VMI, whatever is killed when: the handler↔launcher contract on the node's disk.

A launcher takes an exclusive lock on ``<vmi dir>/launcher.lock`` before it touches anything and
holds it for its whole life (the kernel lets go when it dies, however it dies); only then does it
write ``launcher.pid`` ("pid uid"). A second launcher for the same VMI (a handler killed between
spawning one and noting it, then restarted) finds the lock taken and exits with EXIT_ALREADY_RUNNING,
touching nothing; the handler then adopts the one that holds it, from its pidfile.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_FILE = "launcher.lock"
PID_FILE = "launcher.pid"
EXIT_ALREADY_RUNNING = 75  # EX_TEMPFAIL


def hold(vmi_dir: Path) -> int | None:
    """The lock's descriptor, kept open (not inherited by children) for the launcher's life; None if
    another launcher holds it."""
    vmi_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(vmi_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def held(vmi_dir: Path) -> bool:
    """Whether a live launcher holds the VMI's lock."""
    try:
        fd = os.open(vmi_dir / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def write_pid(vmi_dir: Path, pid: int, uid: str) -> None:
    tmp = vmi_dir / f"{PID_FILE}.tmp"
    tmp.write_text(f"{pid} {uid}\n")
    tmp.rename(vmi_dir / PID_FILE)


def read_pid(vmi_dir: Path) -> tuple[int, str] | None:
    try:
        pid_text, uid = (vmi_dir / PID_FILE).read_text().split()
        return int(pid_text), uid
    except (OSError, ValueError):
        return None
