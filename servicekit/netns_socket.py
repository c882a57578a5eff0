"""Sockets that live in another network namespace: made there by a thread that enters it and comes
back (setns moves only the calling thread; a socket stays in the namespace it was made in).

Python 3.11 has no os.setns: libc through ctypes.
"""

from __future__ import annotations

import ctypes
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def socket_in(netns: str | None, make: Callable[[], socket.socket]) -> socket.socket:
    """``make()`` run inside netns (None: here). Blocking: call it in a thread of its own, or accept
    that this thread is elsewhere for the moment it takes."""
    return run_in(netns, make)


def run_in(netns: str | None, make: Callable[[], T]) -> T:
    """``make()`` run by this thread inside netns (None: here), which then comes back; what it opens
    there (sockets, taps) stays there."""
    if netns is None:
        return make()
    target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        with coming_back():
            if _libc.setns(target, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns {netns}")
            return make()
    finally:
        os.close(target)


@contextmanager
def coming_back() -> Iterator[None]:
    """Whatever network namespace the body moves this thread into (setns, or unshare for a new one),
    the thread is back in its own afterwards: a thread left elsewhere would make every later socket of
    its there."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        yield
    finally:
        try:
            if _libc.setns(home, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back home")
        finally:
            os.close(home)
