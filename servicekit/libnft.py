"""nftables' own library (libnftables, what the ``nft`` program is a front end of), called in this
process: a script runs as ``nft -f -`` would run it, one transaction, without starting a program.

Each launch applied its pod's rules with one ``nft`` run (a fork, an exec and libnftables' own start:
1.7 ms of CPU on an idle box, ~5 ms in the 100-VMI lane), as did every handler sync of node ports,
services, floating IPs and the guest fence that changed their rules. The
library opens its netlink socket when a context is made, so a context made by a thread that entered
a network namespace (servicekit.netns_socket.run_in) works in that namespace. Calls are serialized:
one context at a time per process, as one ``nft`` run at a time was.

``run`` returns None where the library cannot be loaded (another distribution's name, not
installed); the caller then runs the program.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

NFT_CTX_DEFAULT = 0
_NAMES = ("libnftables.so.1",)
_lock = threading.Lock()


def _load() -> ctypes.CDLL | None:
    for name in (*_NAMES, ctypes.util.find_library("nftables")):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        return lib
    return None


_lib = _load()


def available() -> bool:
    return _lib is not None


def run(script: str) -> tuple[int, str] | None:
    """(0, "") when the script was applied, else (non-zero, nft's error text); None without the
    library. Blocking; in whatever network namespace this thread is."""
    if _lib is None:
        return None
    with _lock:
        ctx = _lib.nft_ctx_new(NFT_CTX_DEFAULT)
        if not ctx:
            raise OSError("libnftables: no context (out of memory, or no netlink socket)")
        try:
            _lib.nft_ctx_buffer_output(ctx)  # what nft would print (nothing, for a script of changes)
            _lib.nft_ctx_buffer_error(ctx)
            rc = int(_lib.nft_run_cmd_from_buffer(ctx, script.encode()))
            err = _lib.nft_ctx_get_error_buffer(ctx) or b""
            return rc, err.decode(errors="replace")
        finally:
            _lib.nft_ctx_free(ctx)
