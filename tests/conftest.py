"""Shared fixtures: a real nats-server with JetStream per test, on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from servicekit import credentials, listenport, natsserver
from servicekit.store import Store

REPO = Path(__file__).resolve().parents[1]
# The handlers of the test labs keep no warm memory (handler.warmmemory) unless a test asks: on a
# machine whose host takes back free memory each would touch GiBs at idle priority as it starts,
# beside the guests under test, and the suite brings up dozens of labs.
os.environ.setdefault("VIRTBUS_WARM_MEMORY", "0")
EXAMPLES = Path(os.environ.get("VIRTBUS_EXAMPLES", REPO.parent / "shared" / "examples" / "kubevirt"))


def pytest_configure(config: pytest.Config) -> None:
    # scripts/test.sh runs a pytest in the background, where the shell has SIGINT ignored; Python
    # then keeps it ignored. Interrupting that run must still tear its lab down (KeyboardInterrupt
    # runs the fixtures' finalizers), so it gets Python's usual handler back.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    # A run ended with SIGTERM (a CI job's time limit, a kill of the whole job) tears down as an
    # interrupted one does: Python's default for SIGTERM ends at once, and a lab being used was left
    # running, its state directory then removed under it by scripts/test.sh.
    signal.signal(signal.SIGTERM, _terminated)


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"terminated (signal {signum})")


def free_port() -> int:
    """A free loopback port for a server a test starts later: never one an outgoing connection
    can be given meanwhile (servicekit.listenport)."""
    return listenport.unused_port()


def free_ports(count: int) -> list[int]:
    """count distinct free loopback ports, as free_port chooses them."""
    return listenport.unused_ports(count)


TEST_NODES = ["node1", "node2"]


@dataclass(frozen=True)
class NatsServer:
    url: str
    creds_dir: Path
    proc: subprocess.Popen[bytes]

    def creds(self, user: str) -> str:
        """The seed file of admin, viewer, control or node-<node>."""
        return str(credentials.seed_path(self.creds_dir, user))


def write_auth(directory: Path, port: int, nodes: list[str] = TEST_NODES) -> Path:
    """Seeds for every role and the server config admitting only them; returns the config."""
    users = credentials.users_for(nodes)
    keys = credentials.ensure_seeds(directory / "creds", users)
    conf = directory / "nats.conf"
    credentials.write_server_config(conf, credentials.server_config(
        users, keys, host="127.0.0.1", port=port, store_dir=str(directory / "js"), server_name=f"test-{port}"))
    return conf


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A real nats-server with authentication on, as virtbus always runs it."""
    try:
        natsserver.executable()
    except natsserver.NatsServerMissing as e:
        pytest.fail(str(e))
    port = free_port()
    with running_nats_server(write_auth(tmp_path, port), port) as proc:
        yield NatsServer(f"nats://127.0.0.1:{port}", tmp_path / "creds", proc)


@contextlib.contextmanager
def running_nats_server(conf: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """nats-server with this config, once it listens on the loopback port; ended (by its PID) after."""
    proc = subprocess.Popen([natsserver.executable(), "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("nats-server did not start")
            time.sleep(0.05)
        yield proc
    finally:
        end_processes([proc])


def end_processes(procs: list[subprocess.Popen[bytes]], timeout: float = 10) -> None:
    """SIGTERM to each that still runs, all at once; then each is waited for (reaped), and killed if
    it has not ended within ``timeout``."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def restart_nats_server(nats_server: NatsServer, tmp_path: Path,
                              down_s: float = 0.0) -> asyncio.subprocess.Process:
    """The test's nats-server ended (SIGTERM) and, ``down_s`` later, started again on the same port with
    the same JetStream store, as after an outage; the caller ends it with ``end_process``."""
    nats_server.proc.send_signal(signal.SIGTERM)
    nats_server.proc.wait(10)
    await asyncio.sleep(down_s)
    return await asyncio.create_subprocess_exec(natsserver.executable(), "-c", str(tmp_path / "nats.conf"),
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def end_process(proc: asyncio.subprocess.Process | None, grace_s: float = 10) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``; reaped either way."""
    if proc is None or proc.returncode is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), grace_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()


_TRY_CONNECT = """
import asyncio, os, ssl, sys, nats
async def main():
    kw = {"nkeys_seed": sys.argv[2]} if len(sys.argv) > 2 else {}
    if sys.argv[1].startswith("tls://"):
        kw["tls"] = ssl.create_default_context(cafile=os.environ.get("NATS_CA"))
    try:
        nc = await nats.connect(sys.argv[1], allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2, **kw)
    except Exception as exc:
        print("refused:", exc)
        return
    print("connected")
    await nc.close()
asyncio.run(main())
"""


def try_connect(url: str, *seed: str, env: dict[str, str] | None = None) -> str:
    """A client's connect in its own process (nats-py leaves a refused connection's socket behind):
    "connected", or "refused: <why>". With a tls:// URL, NATS_CA in env names the CA to trust."""
    return subprocess.run([sys.executable, "-c", _TRY_CONNECT, url, *seed], capture_output=True, text=True,
                          timeout=30, env=env).stdout


@pytest.fixture
def nats_url(nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """The server's URL, with NATS_CREDS set to its admin seed for the clients the test makes."""
    monkeypatch.setenv("NATS_CREDS", nats_server.creds("admin"))
    return nats_server.url


@pytest.fixture
async def store(nats_url: str) -> AsyncIterator[Store]:
    s = await Store.connect(nats_url, "test")
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def scratch_netns() -> Iterator[str]:
    """A throwaway network namespace of the test's own (``nft -c`` against it, rules applied in it):
    never the host's."""
    if os.geteuid() != 0 or shutil.which("nft") is None:
        pytest.skip("needs root and nft")
    name = f"vbscratch-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=True)
