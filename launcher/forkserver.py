"""``python -m launcher.forkserver``: one per node, started by its handler; forks a launcher per VMI
from an interpreter that has already imported everything a launcher needs (nats, libvirt, pyroute2,
msgspec: ~0.3 s of CPU idle, several seconds in a crowd of booting guests), instead of starting a
fresh one each time.

Each launcher is still a process of its own, as ``python -m launcher`` made it: its own session,
its own stdio (its log file), its command line rewritten to ``python -m launcher --vmi ... --uid ...``
(what a restarted handler checks before re-adopting it by its pidfile); it makes its pod network
namespace and unshares its mount namespace itself, after the fork. Forking is only safe from a
process with one thread and no event loop: this one is single-threaded, serves with a plain
``selectors`` loop, and refuses to fork if an import ever started a thread.

It listens on the socket its handler made and passed as ``--listen-fd``, and lives as long as its
handler: its stdin is a pipe from the handler, whose end (the handler died or stopped) ends it. The
launchers it forked run on; the next handler adopts them as it adopts spawned ones.
"""

from __future__ import annotations

import argparse
import concurrent.futures.thread  # noqa: F401 - asyncio.to_thread's pool, which concurrent.futures imports lazily
import gc
import os
import selectors
import socket
import sys
import threading
import traceback
from collections.abc import Callable

import msgspec
import nkeys  # noqa: F401 - nats imports it (and libsodium's bindings) only when it connects with a seed
from nats.aio.client import ServerVersion

import launcher.__main__ as launcher_main  # the whole launcher (runner, libvirt, nats...), imported once
from proto.launchfork import MAX_LINE, Forked, ForkRequest, encode
from servicekit import store

PAD = 4096  # bytes of command line kept for a launcher's own (see set_cmdline)


def set_cmdline(argv: list[str]) -> None:
    """Rewrite this process's command line in place (what setproctitle does), within the room the
    fork server's own command line had. /proc/<pid>/cmdline then reads as the launcher's."""
    fields = open("/proc/self/stat", "rb").read().rsplit(b")", 1)[1].split()
    start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end: fields 48 and 49
    data = b"\0".join(a.encode() for a in argv) + b"\0"
    if len(data) > end - start:
        raise OSError(f"a launcher's command line needs {len(data)} bytes, the fork server has {end - start}")
    with open("/proc/self/mem", "r+b", buffering=0) as mem:
        mem.seek(start)
        mem.write(data.ljust(end - start, b"\0"))


def _read_request(conn: socket.socket) -> ForkRequest:
    conn.settimeout(5.0)
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk or len(data) > MAX_LINE:
            raise ValueError("no complete request")
        data += chunk
    return msgspec.json.decode(data, type=ForkRequest)


def stdio(log_path: str) -> None:
    """The launcher's stdin is /dev/null, its stdout and stderr its log, whatever was open before."""
    null = os.open("/dev/null", os.O_RDONLY)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    # The fork server's stdin (the handler's pipe) is closed before this, so /dev/null may itself
    # have been given fd 0. Then dup2 changes nothing: fd 0 keeps os.open's close-on-exec, and each
    # program the launcher runs starts without a stdin; the next socket it opens becomes fd 0, and
    # ovs-vsctl aborts on that (poll_create_node's assertion). Nor may that fd be closed below.
    for fd in (0, 1, 2):
        os.set_inheritable(fd, True)
    for fd in {null, log} - {0, 1, 2}:
        os.close(fd)


def prepare() -> None:
    """What every launcher would otherwise build afresh, the same each time, built once here: the
    store's decoders (~4 ms a launch) and nats-py's pattern for the server's version, which it
    compiles at its first connection (re's cache then keeps it, here for every child)."""
    store.prepare_decoders()
    ServerVersion("2.9.0").parse_version()


def share_with_children() -> None:
    """Keep what this interpreter imported out of its children's full collections (``gc.freeze``, as
    Instagram's prefork servers do). A full collection walks every container object and writes to
    each one's header, copying every page of them into the child: after one, a child of this
    process held 19 MiB of private dirty memory, 3.5 MiB with the imports frozen. (A fresh launcher's
    memory did not move, 15.2 vs 15.3 MiB private: it had yet to run a full collection; this keeps
    a long-lived one from paying for it later.) Garbage is collected first, so none is kept for good."""
    gc.collect()
    gc.freeze()


def _child(request: ForkRequest, close: Callable[[], None]) -> None:
    """In the forked child: become the launcher. Never returns."""
    code = 1
    try:
        os.setsid()  # a session of its own, as start_new_session gave a spawned launcher
        close()  # the fork server's descriptors: a launcher holds none of them
        stdio(request.log)
        set_cmdline([sys.executable, "-m", "launcher", *request.args])
        launcher_main.main(request.args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: S110 - nowhere left to say it
                pass
        os._exit(code)


class ForkServer:
    def __init__(self, listener: socket.socket, parent: int) -> None:
        self.listener = listener
        self.parent = parent  # the read end of the handler's pipe
        self.selector = selectors.EpollSelector()
        self.waiting: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, connection)

    def serve(self) -> None:
        prepare()
        share_with_children()  # the first full collection (~30 ms) now, not in the first launch's way
        self.selector.register(self.listener, selectors.EVENT_READ, "accept")
        self.selector.register(self.parent, selectors.EVENT_READ, "parent")
        while True:
            for key, _ in self.selector.select():
                if key.data == "parent":
                    if not os.read(self.parent, 4096):
                        return  # the handler is gone; the launchers run on without us
                elif key.data == "accept":
                    conn, _ = self.listener.accept()
                    self._fork(conn)
                else:
                    self._ended(key.fd)

    def _fork(self, conn: socket.socket) -> None:
        try:
            request = _read_request(conn)
        except (OSError, ValueError, msgspec.ValidationError, msgspec.DecodeError) as exc:
            self._reply(conn, Forked(error=f"bad request: {exc}"))
            conn.close()
            return
        if threading.active_count() != 1:  # a fork now would copy a lock some thread holds
            self._reply(conn, Forked(error="the fork server has threads; it cannot fork safely"))
            conn.close()
            return
        sys.stdout.flush()
        sys.stderr.flush()
        share_with_children()
        pid = os.fork()
        if pid == 0:
            _child(request, lambda: self._close_in_child(conn))
        pidfd = os.pidfd_open(pid)
        self.waiting[pidfd] = (pid, conn)
        self.selector.register(pidfd, selectors.EVENT_READ, "child")
        conn.setblocking(False)
        self._reply(conn, Forked(pid=pid))

    def _close_in_child(self, conn: socket.socket) -> None:
        """Detached first: the socket objects must not close a number the launcher reuses."""
        self.selector.close()
        for sock in (self.listener, conn, *(c for _, c in self.waiting.values())):
            os.close(sock.detach())
        for fd in (self.parent, *self.waiting):
            os.close(fd)

    def _ended(self, pidfd: int) -> None:
        pid, conn = self.waiting.pop(pidfd)
        self.selector.unregister(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        self._reply(conn, Forked(pid=pid, exit_code=os.waitstatus_to_exitcode(status)))
        conn.close()

    @staticmethod
    def _reply(conn: socket.socket, message: Forked) -> None:
        try:
            conn.sendall(encode(message))
        except OSError:
            pass  # the handler that asked is gone; the next one adopts by the pidfile


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m launcher.forkserver")
    p.add_argument("--listen-fd", type=int, required=True, help="a listening unix socket, from the handler")
    p.add_argument("--pad", default="", help="room for the launchers' command lines (ignored)")
    args = p.parse_args(argv)
    listener = socket.socket(fileno=args.listen_fd)
    ForkServer(listener, sys.stdin.fileno()).serve()


if __name__ == "__main__":
    main()
