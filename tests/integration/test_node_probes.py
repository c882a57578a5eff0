"""Probes as a node runs them: the handler's prober (handler.probes) probing a VMI's pod address in a
real network namespace, where an HTTP server stands in for the guest, and saying what it found through
the control plane's real node API on a real nats-server. Readiness: not Ready until the probe passes;
Ready, and so in its Services' endpoints; not Ready again, with the reason, once the guest answers 503
as many times in a row as failureThreshold says; a port nothing listens on never Ready. Liveness: a
live guest's instance runs on; one whose port does not answer ends, Failed, with the reason."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from handler.portforward import NetnsDialer
from handler.probes import FAILED, Prober
from proto.nodeapi import WAITING_FOR_PROBE
from proto.services import ready_address
from proto.spec import Interface, Network, Probe, VMSpec
from proto.state import VMI, Condition, Phase, VMIInterface
from scheduler.nodeapi import NodeApi
from servicekit.cancelling import cancel_and_wait
from servicekit.endpoints import serve
from servicekit.nodeclient import NodeApiClient
from servicekit.store import Store

pytestmark = pytest.mark.integration
POD_IP = "10.244.9.3"
SERVER = """
import http.server, os, sys
class Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 503 if os.path.exists(sys.argv[1]) else 200
        self.send_response(code); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("{ip}", 8080), Answer)
print("listening", flush=True)
server.serve_forever()
"""


@pytest.fixture
def guest(scratch_netns: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTP server on POD_IP:8080 in the namespace: 200, or 503 while the flag file exists."""
    flag = tmp_path / "unwell"
    subprocess.run(["ip", "-n", scratch_netns, "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "-n", scratch_netns, "addr", "add", f"{POD_IP}/32", "dev", "lo"], check=True)
    proc = subprocess.Popen(["ip", "netns", "exec", scratch_netns, sys.executable, "-c", SERVER.format(ip=POD_IP),
                             str(flag)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "listening"
        yield scratch_netns, flag
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def probed(name: str, probe: Probe, liveness: Probe | None = None) -> VMI:
    """A Running VMI as the control plane makes it when it has a readinessProbe: not Ready yet."""
    spec = VMSpec(name=name, interfaces=[Interface(name="default", binding="masquerade")],
                  networks=[Network(name="default", kind="pod")], readiness_probe=probe, liveness_probe=liveness)
    return VMI(name=name, uid=f"{name}-uid", spec=spec, created_at=time.time(), phase=Phase.RUNNING,
               node_name="node1", started_at=time.time(), interfaces=[VMIInterface(name="default", ip_address=POD_IP)],
               conditions=[Condition(type="Ready", status="False", reason=WAITING_FOR_PROBE)])


async def ready_of(store: Store, name: str) -> Condition | None:
    vmi = (await store.vmis.require(name, "VMI")).value
    return next((c for c in vmi.conditions if c.type == "Ready"), None)


async def until(store: Store, name: str, status: str, within: float) -> Condition:
    deadline = time.monotonic() + within
    while (cond := await ready_of(store, name)) is None or cond.status != status:
        assert time.monotonic() < deadline, f"{name} Ready is {cond}, not {status}, after {within}s"
        await asyncio.sleep(0.1)
    return cond


async def test_ready_follows_the_probe(store: Store, guest: tuple[str, Path]) -> None:
    netns, unwell = guest
    await store.vmis.create("web", probed("web", Probe(kind="http", port=8080, path="/healthz", period_seconds=1,
                                                       failure_threshold=2)))
    await store.vmis.create("closed", probed("closed", Probe(kind="tcp", port=8081, period_seconds=1)))
    await store.vmis.create("alive", probed("alive", Probe(kind="tcp", port=8080, period_seconds=1),
                                            liveness=Probe(kind="tcp", port=8080, period_seconds=1)))
    await store.vmis.create("dead", probed("dead", Probe(kind="tcp", port=8080, period_seconds=1),
                                           liveness=Probe(kind="tcp", port=8082, period_seconds=1,
                                                          initial_delay_seconds=1, failure_threshold=2)))

    async def vmis() -> list[VMI]:
        return [e.value for e in await store.vmis.items()]

    service = await serve(store.nc, name="virtbus-nodeapi", version="0.1.0", description="test", queue="q",
                          endpoints=NodeApi(store).endpoints())
    prober = Prober(vmis, NetnsDialer(netns), NodeApiClient(store.nc, "node1"), "node1")
    task = asyncio.create_task(prober.run())
    try:
        start = time.monotonic()
        await until(store, "web", "True", within=10)
        print(f"\nReady {time.monotonic() - start:.2f}s after the prober started")
        assert ready_address((await store.vmis.require("web", "VMI")).value) is not None  # in its Services

        unwell.touch()  # the guest answers 503: two failures in a row, a second apart
        cond = await until(store, "web", "False", within=10)
        assert cond.reason == FAILED and "HTTP status 503" in cond.message, cond
        assert ready_address((await store.vmis.require("web", "VMI")).value) is None

        unwell.unlink()
        await until(store, "web", "True", within=10)

        # nothing listens on 8081: probed all along, never Ready, and nothing said while it agrees
        closed = await ready_of(store, "closed")
        assert closed is not None and (closed.status, closed.reason) == ("False", WAITING_FOR_PROBE)
        assert prober.runs[("closed-uid", "readiness_probe")].failures >= 3
        assert "refused" in prober.runs[("closed-uid", "readiness_probe")].last_error

        # liveness: the one whose port answers runs on; the other ended after two failures in a row
        dead = (await store.vmis.require("dead", "VMI")).value
        assert dead.phase is Phase.FAILED, dead
        assert dead.reason == "liveness probe failed 2 times: Connection refused", dead.reason
        assert (await store.vmis.require("alive", "VMI")).value.phase is Phase.RUNNING
        assert prober.runs[("alive-uid", "liveness_probe")].passes >= 3  # probed all along, passing
    finally:
        await cancel_and_wait([task])
        await service.stop()
