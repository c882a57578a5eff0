"""The handler's side of its node's launcher fork server (``python -m launcher.forkserver``): starts
it, asks it for a launcher, and follows that launcher as it would a process it spawned itself
(``ForkedProcess`` has the part of Popen's interface handler.launchers uses).

A new launcher from an interpreter that has imported everything already costs a fork instead of
~0.3 s of imports (several seconds when booting guests crowd the CPU). Anything wrong with the fork
server (it would not start, died, refused) and handler.launchers spawns ``python -m launcher`` as before.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import structlog

from proto.launchfork import MAX_LINE, Forked, ForkRequest, encode
from servicekit import processes

log = structlog.get_logger()
PAD = 4096  # room in the fork server's command line for a launcher's own (launcher.forkserver.set_cmdline)
CONNECT_PATIENCE_S = 30.0  # a fork server still importing, on a crowded node, answers late
UNKNOWN_EXIT = 1  # a launcher that ended after its fork server died: how, nobody can tell


class ForkFailed(Exception):
    pass


class ForkedProcess:
    """A launcher the fork server forked: its pid at once, its exit code over the same connection
    once it ends. If the fork server dies first, the launcher is judged by its pid alone."""

    def __init__(self, pid: int, conn: socket.socket | None) -> None:
        self.pid = pid
        self.conn = conn
        self.returncode: int | None = None
        self.buffer = b""

    def poll(self) -> int | None:
        if self.returncode is not None:
            return self.returncode
        if self.conn is not None:
            chunk = b""
            if b"\n" not in self.buffer:
                try:
                    chunk = self.conn.recv(4096)
                except BlockingIOError:
                    return None
                except OSError:
                    pass
                self.buffer += chunk
            if b"\n" in self.buffer:
                try:
                    said = msgspec.json.decode(self.buffer.split(b"\n", 1)[0], type=Forked)
                except msgspec.MsgspecError:
                    said = Forked()
                self._close()
                self.returncode = said.exit_code if said.exit_code is not None else UNKNOWN_EXIT
                return self.returncode
            if chunk:
                return None
            self._close()  # the fork server is gone: the process itself is all there is to go by
        if not processes.alive(self.pid):
            self.returncode = UNKNOWN_EXIT
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"launcher {self.pid}", timeout or 0.0)
            time.sleep(0.05)
        return code

    def _close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class ForkServer:
    def __init__(self, log_file: Path) -> None:
        self.log_file = log_file
        self.address = f"\0virtbus-launchers-{secrets.token_hex(8)}"  # abstract: no path, gone with us
        self.proc: subprocess.Popen[bytes] | None = None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Listening before it starts: a request made while it still imports waits in the backlog."""
        if self.running():
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            listener.bind(self.address)
            listener.listen(128)
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_file, "ab") as logf:
                # its stdin: a pipe only this handler writes to, whose end tells it the handler is gone
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "launcher.forkserver", "--listen-fd", str(listener.fileno()),
                     "--pad", " " * PAD], stdin=subprocess.PIPE, stdout=logf, stderr=logf,
                    pass_fds=[listener.fileno()], start_new_session=True)
        log.info("launcher fork server started", pid=self.proc.pid)

    def fork(self, args: list[str], log_path: Path) -> ForkedProcess:
        if not self.running():
            raise ForkFailed("the fork server is not running")
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.settimeout(CONNECT_PATIENCE_S)
            conn.connect(self.address)
            conn.sendall(encode(ForkRequest(args=args, log=str(log_path))))
            data = b""
            while b"\n" not in data:
                chunk = conn.recv(4096)
                if not chunk or len(data) > MAX_LINE:
                    raise ForkFailed("the fork server closed the connection without a pid")
                data += chunk
            # a launcher that left at once may have its exit code in the same read: kept for poll()
            line, rest = data.split(b"\n", 1)
            said = msgspec.json.decode(line, type=Forked)
        except (OSError, msgspec.MsgspecError) as exc:
            conn.close()
            raise ForkFailed(str(exc)) from exc
        except ForkFailed:
            conn.close()
            raise
        if said.pid is None:
            conn.close()
            raise ForkFailed(said.error or "no pid")
        conn.setblocking(False)
        forked = ForkedProcess(said.pid, conn)
        forked.buffer = rest
        return forked

    def stop(self) -> None:
        """Closing its stdin ends it (the launchers it forked run on)."""
        if self.proc is not None:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            processes.end([self.proc.pid], 5.0)
            self.proc.wait()
