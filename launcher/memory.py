"""A launcher's own memory: it lives as long as its guest, so what it holds is overhead on every VM
of the node (bench/density.py)."""

from __future__ import annotations

import ctypes
import gc

M_ARENA_MAX = -8  # glibc's mallopt parameter

_libc = ctypes.CDLL(None, use_errno=True)


def one_arena() -> None:
    """One malloc arena for the whole launcher (set before any thread starts). glibc gives each thread
    that allocates an arena of its own: a launcher's threads (its event loop, those that wait on
    libvirt calls, on disks and NICs made at once) allocate little and seldom at once."""
    _libc.mallopt(M_ARENA_MAX, 1)


def settle() -> None:
    """Once the domain runs: what the launch left behind freed, and the heap's free pages given back."""
    gc.collect()
    _libc.malloc_trim(0)
