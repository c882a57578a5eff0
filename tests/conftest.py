"""Shared fixtures: a real nats-server with JetStream per test, on a free loopback port."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from servicekit.store import Store

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = Path(os.environ.get("VIRTBUS_EXAMPLES", REPO.parent / "shared" / "examples" / "kubevirt"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    if shutil.which("nats-server") is None:
        pytest.fail("nats-server is not installed: run scripts/setup.sh")
    port = free_port()
    proc = subprocess.Popen(["nats-server", "-js", "-sd", str(tmp_path / "js"), "-a", "127.0.0.1",
                             "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("nats-server did not start")
            time.sleep(0.05)
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
async def store(nats_url: str) -> AsyncIterator[Store]:
    s = await Store.connect(nats_url, "test")
    try:
        yield s
    finally:
        await s.close()
