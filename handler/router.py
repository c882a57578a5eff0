"""The node's HTTP proxy: one HAProxy per node, in the node's network namespace, serving every Route
and Ingress on the node's address (handler.haproxycfg composes its configuration).

HAProxy runs in master-worker mode (``-W``) in the foreground of its own session, so a handler that
dies leaves it serving and the next one adopts it from its pidfile (``<node dir>/router/haproxy.pid``,
checked against the process's command line: a recycled pid is no HAProxy of ours). A changed
configuration is checked (``haproxy -c``) before it replaces the old file, then the master is sent
SIGUSR2: it starts new workers on the same listening sockets and lets the old ones finish their
connections, so a reload drops nothing. Each reload waits until the master has re-executed and forked
its new worker, so reloads never pile up mid-re-exec and one that did not happen is logged. A handler
that stops ends its HAProxy (that pid only); one that died unexpectedly is restarted within seconds.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from ipaddress import IPv4Address
from pathlib import Path
from typing import Protocol

import structlog

from handler.haproxycfg import compose_haproxy
from proto import subjects
from proto.routes import Ingress, Route
from proto.state import Endpoints, Service
from servicekit import processes
from servicekit.informer import shared
from servicekit.resync import resync_on_changes
from servicekit.store import Store

log = structlog.get_logger()
SUPERVISE_S = 2.0
RELOAD_S = 10.0  # a reload's re-exec and new worker; longer means it went wrong


class Proxy(Protocol):
    """The proxy process of this node: what NodeRouter needs of it."""

    config: Path

    def check(self, config: Path) -> str | None:
        """What is wrong with a configuration file, or None if the proxy would run it."""

    def adopt(self) -> bool:
        """Find the proxy an earlier handler left running; True if there is one."""

    def alive(self) -> bool: ...

    def start(self) -> None: ...

    def reload(self) -> None: ...

    def stop(self) -> None: ...


class Haproxy:
    """The real one: ``[ip netns exec NETNS] haproxy -W -f CONFIG -p PIDFILE``."""

    def __init__(self, directory: Path, netns: str | None, log_file: Path, binary: str = "haproxy") -> None:
        self.config = directory / "haproxy.cfg"
        self.pidfile = directory / "haproxy.pid"
        self.netns = netns
        self.log_file = log_file
        self.binary = binary
        self.pid: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def check(self, config: Path) -> str | None:
        done = subprocess.run([self.binary, "-c", "-q", "-f", str(config)], capture_output=True, text=True,
                              check=False, timeout=30)
        return None if done.returncode == 0 else (done.stderr or done.stdout).strip()[-2000:]

    def _ours(self, pid: int) -> bool:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return processes.alive(pid) and Path(cmdline[0].decode(errors="replace")).name == "haproxy" \
            and str(self.config).encode() in cmdline

    def adopt(self) -> bool:
        try:
            pid = int(self.pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return False
        if pid < 2 or not self._ours(pid):
            return False
        self.pid, self.proc = pid, None
        return True

    def alive(self) -> bool:
        if self.pid is None:
            return False
        if self.proc is not None:
            return self.proc.poll() is None
        return self._ours(self.pid)

    def start(self) -> None:
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as out:
            # its own session: it outlives a handler that dies, and the next one adopts it
            self.proc = subprocess.Popen([*prefix, self.binary, "-W", "-f", str(self.config), "-p", str(self.pidfile)],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
                                         close_fds=True)
        self.pid = self.proc.pid  # ip netns exec execs it: the same process

    def reload(self) -> None:
        """SIGUSR2 to the master, then wait until it has re-executed (its SIGUSR2 handler back) and
        forked a new worker; one an earlier handler left half done is waited out first."""
        if self.pid is None:
            return
        pid = self.pid
        _wait(lambda: _catches_usr2(pid), RELOAD_S)
        before = _children(pid)
        os.kill(pid, signal.SIGUSR2)
        if not _wait(lambda: bool(_children(pid) - before) and _catches_usr2(pid), RELOAD_S):
            log.warning("HTTP proxy reload not seen done", pid=pid, within=RELOAD_S)

    def stop(self) -> None:
        if self.pid is None:
            return
        processes.end([self.pid], 10, is_alive=lambda _: self.alive())
        if self.proc is not None:
            self.proc.wait()
        self.pidfile.unlink(missing_ok=True)
        self.pid, self.proc = None, None


class NodeRouter:
    def __init__(self, store: Store, proxy: Proxy, *, address: IPv4Address | None, port: int) -> None:
        self.store = store
        self.proxy = proxy
        self.address = address
        self.port = port
        # the process's informers (services and endpoints: those the rules and cluster DNS share):
        # each sync reads their caches, not the buckets
        self.routes = shared(store, store.bucket(subjects.BUCKET_ROUTES, Route))
        self.ingresses = shared(store, store.bucket(subjects.BUCKET_INGRESSES, Ingress))
        self.services = shared(store, store.bucket(subjects.BUCKET_SERVICES, Service))
        self.endpoints = shared(store, store.bucket(subjects.BUCKET_ENDPOINTS, Endpoints))
        self._applied: str | None = None
        self._written: str | None = None

    async def run(self) -> None:
        if await asyncio.to_thread(self.proxy.adopt):
            log.info("adopted the HTTP proxy an earlier handler left")
        await resync_on_changes([self.routes.changes(), self.ingresses.changes(), self.services.changes(),
                                 self.endpoints.changes(), self._deaths()], self.sync, "routes")

    async def _deaths(self) -> AsyncIterator[None]:
        yield None  # a first sync, whatever the buckets hold
        while True:
            await asyncio.sleep(SUPERVISE_S)
            if not await asyncio.to_thread(self.proxy.alive):
                yield None

    async def sync(self) -> None:
        routes = [e.value for e in await self.routes.items()]
        ingresses = [e.value for e in await self.ingresses.items()]
        services = {e.key: e.value for e in await self.services.items()}
        endpoints = {e.key: e.value for e in await self.endpoints.items()}
        config = compose_haproxy(routes, ingresses, services, endpoints, address=self.address, port=self.port)
        alive = await asyncio.to_thread(self.proxy.alive)
        if config == self._applied and alive:
            return
        if config != self._written:
            await asyncio.to_thread(self._write, config)
        if alive:
            await asyncio.to_thread(self.proxy.reload)
            log.info("HTTP proxy reloaded", routes=len(routes), ingresses=len(ingresses))
        else:
            if self._applied is not None:
                log.warning("HTTP proxy was not running; starting it again")
            await asyncio.to_thread(self.proxy.start)
            log.info("HTTP proxy started", address=str(self.address or "*"), port=self.port, routes=len(routes),
                     ingresses=len(ingresses))
        self._applied = config

    def _write(self, config: str) -> None:
        """Checked before it replaces the file the running proxy reads on its next reload."""
        self.proxy.config.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.proxy.config.with_suffix(".new")
        tmp.write_text(config)
        error = self.proxy.check(tmp)
        if error is not None:
            raise RuntimeError(f"haproxy refuses the composed configuration: {error}")
        os.replace(tmp, self.proxy.config)
        self._written = config

    async def stop(self) -> None:
        await asyncio.to_thread(self.proxy.stop)


def _children(pid: int) -> set[int]:
    try:
        return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except (OSError, ValueError):
        return set()


def _catches_usr2(pid: int) -> bool:
    """Whether the process has a handler for SIGUSR2 now (/proc's SigCgt mask)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next((line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), "0")
    return bool(int(caught, 16) & (1 << (signal.SIGUSR2 - 1)))


def _wait(done: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def haproxy_installed(binary: str = "haproxy") -> bool:
    return shutil.which(binary) is not None
