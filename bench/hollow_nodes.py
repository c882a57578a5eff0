"""Hollow nodes (kubemark), BENCHMARK TOOLING: N hollow nodes in this process (bench/hollow.py: the
handler's registration, heartbeat and scoped watch, the launcher simulated) against its own
nats-server (authentication on, one user per node), the real scheduler and API (``python -m
scheduler``); M VMs created through the API at once. Prints creation->Running P50/P99, binds/s,
steady-state messages and bytes per node per minute (nats-server's /connz, per connection), the
scheduler's CPU and RSS per VMI, and one solo hollow node's CPU with 100 VMs (its own process).
Usage:
    .venv/bin/python bench/hollow_nodes.py [--nodes 1000] [--vmis 10000] [--window 60]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
from nats.aio.client import Client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hollow import POOL, POOL_LABEL, HollowNode, percentile, start_all  # noqa: E402 - bench/hollow.py, beside this script
from procstat import TICKS, cpu_ticks, rss_kib  # noqa: E402 - bench/procstat.py

from proto import subjects  # noqa: E402
from servicekit import credentials  # noqa: E402

SOLO = "solo"
SOLO_VMS = 100


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """One nats-server, or a cluster of them: ``url`` lists every client URL (clients pick one)."""

    url: str
    monitors: list[str]
    creds: Path

    def url_of(self, i: int) -> str:
        """The i-th client's server, round robin: a cluster's clients spread over its servers."""
        urls = self.url.split(",")
        return urls[i % len(urls)]


@contextlib.contextmanager
def nats_server(directory: Path, nodes: list[str], size: int = 1) -> Iterator[Server]:
    """nats-server(s) with one user per node (as the lab's) and monitoring ports; a cluster of
    ``size`` routed to each other when size > 1 (state then kept with 3 replicas, as the compose
    lab's). Each ended by its PID."""
    users = credentials.users_for(nodes)
    keys = credentials.ensure_seeds(directory / "creds", users)
    ports = [(free_port(), free_port(), free_port()) for _ in range(size)]
    routes = [f"nats://127.0.0.1:{route}" for _, _, route in ports]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i, (port, mport, route) in enumerate(ports):
            cluster = {"name": "hollow", "host": "127.0.0.1", "port": route, "routes": routes} if size > 1 else None
            config = json.loads(credentials.server_config(users, keys, host="127.0.0.1", port=port,
                                                          store_dir=str(directory / f"js{i}"),
                                                          server_name=f"hollow{i}", cluster=cluster))
            config["http_port"] = mport
            config["max_connections"] = 65536
            conf = directory / f"nats{i}.conf"
            credentials.write_server_config(conf, json.dumps(config))
            procs.append(subprocess.Popen(["nats-server", "-c", str(conf)], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        monitors = [f"http://127.0.0.1:{mport}" for _, mport, _ in ports]
        deadline = time.monotonic() + 60
        for monitor, proc in zip(monitors, procs, strict=True):
            while True:  # healthz answers ok once JetStream is up (a cluster's: its meta leader elected)
                try:
                    urllib.request.urlopen(f"{monitor}/healthz", timeout=1).read()
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("nats-server did not start") from None
                    time.sleep(0.2)
        yield Server(",".join(f"nats://127.0.0.1:{port}" for port, _, _ in ports), monitors, directory / "creds")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)


def seed(server: Server, user: str) -> str:
    return str(credentials.seed_path(server.creds, user))


@contextlib.contextmanager
def process(args: list[str], log: Path, checkout: str | None = None) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, **({"PYTHONPATH": checkout} if checkout else {})}
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=checkout)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()






def connz(server: Server) -> dict[str, dict[str, int]]:
    """Per client connection name: messages and bytes in and out, as its server counts them (a
    cluster's route traffic between servers is not a client's, and not counted)."""
    out: dict[str, dict[str, int]] = {}
    for monitor in server.monitors:
        with urllib.request.urlopen(f"{monitor}/connz?limit=100000", timeout=30) as reply:
            data = json.load(reply)
        for c in data["connections"]:
            out[c.get("name", f"{monitor}/{c['cid']}")] = {
                k: int(c[k]) for k in ("in_msgs", "out_msgs", "in_bytes", "out_bytes")}
    return out


def vm_manifest(name: str, node: str | None) -> bytes:
    spec: dict[str, object] = {"domain": {"devices": {}, "resources": {"requests": {"memory": "64Mi"}}}}
    spec["nodeSelector"] = {"kubernetes.io/hostname": node} if node is not None else {POOL_LABEL: POOL}
    return json.dumps({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": name},
                       "spec": {"runStrategy": "Always", "template": {"spec": spec}}}).encode()


@dataclass
class Result:
    nodes: int
    vmis: int
    running: int
    foreign: int  # updates a hollow node heard about another node's VMIs: must be 0
    wrong_node: int  # VMIs a hollow node reported Running that are not bound to it: must be 0
    bind_s: float
    p50: float
    p99: float
    msgs_per_node_min: float
    bytes_per_node_min: float
    scheduler_cpu: float
    scheduler_rss_per_vmi_kib: float
    solo_cpu: float | None

    def lines(self) -> list[str]:
        return [
            f"hollow nodes: {self.nodes}, VMIs: {self.vmis}, Running: {self.running}, "
            f"updates about another node's VMIs: {self.foreign}, reported on the wrong node: {self.wrong_node}",
            f"all bound in {self.bind_s:.1f} s ({self.vmis / max(self.bind_s, 1e-9):.0f} binds/s, "
            "creation to bound as the nodes heard it)",
            f"creation->Running: P50 {self.p50:.2f} s, P99 {self.p99:.2f} s",
            f"steady state per node per minute: {self.msgs_per_node_min:.0f} messages, "
            f"{self.bytes_per_node_min / 1024:.1f} KiB",
            f"scheduler: {self.scheduler_cpu:.1f} % of a core, RSS {self.scheduler_rss_per_vmi_kib:.1f} KiB per VMI",
            "one hollow handler with 100 VMs: " + (f"{self.solo_cpu:.2f} % of a core" if self.solo_cpu is not None
                                                   else "not measured"),
        ]


async def create_all(nc: Client, names: list[tuple[str, str | None]],
                     created: dict[str, float], parallel: int = 200) -> None:
    async def one(name: str, node: str | None) -> None:
        for _ in range(20):
            t = time.time()
            msg = await nc.request(subjects.api("vm", "create"), vm_manifest(name, node), timeout=60)
            reply = json.loads(msg.data)
            if "item" in reply:
                created[name] = t
                return
            if not reply.get("error", {}).get("retryable"):
                raise RuntimeError(f"{name}: {reply}")
            await asyncio.sleep(0.5)

    for i in range(0, len(names), parallel):
        await asyncio.gather(*(one(n, node) for n, node in names[i:i + parallel]))


async def run(nodes: int, vmis: int, window: float, solo: bool, patience: float, legacy: str | None,
              cluster: int = 1) -> Result:
    """legacy: a virtbus checkout from before scoped watches and leases (its scheduler runs; the
    hollow nodes behave as its handler did), for the before figures."""
    names = [f"hollow-{i:04d}" for i in range(nodes)]
    with tempfile.TemporaryDirectory(prefix="virtbus-hollow-") as tmp:
        directory = Path(tmp)
        if cluster > 1:
            os.environ["VIRTBUS_JS_REPLICAS"] = "3"  # the scheduler makes the buckets R3, as the compose lab
        with nats_server(directory, [*names, SOLO], cluster) as server, \
                process([sys.executable, "-m", "scheduler", "--server", server.url, "--creds", seed(server, "control")],
                        directory / "scheduler.log", legacy) as scheduler:
            hollow = [HollowNode(n, server.url_of(i), seed(server, credentials.node_user(n)),
                                 legacy=legacy is not None) for i, n in enumerate(names)]
            admin = await nats.connect(server.url.split(","), nkeys_seed=seed(server, "admin"))
            solo_proc: subprocess.Popen[bytes] | None = None
            try:
                await start_all(hollow)
                if solo:
                    solo_proc = spawn_solo(server, directory / "solo.log")
                await asyncio.sleep(3.0)  # the nodes Ready
                base_rss = rss_kib(scheduler.pid)
                created: dict[str, float] = {}
                wanted: list[tuple[str, str | None]] = [(f"vm-{i:05d}", None) for i in range(vmis)]
                if solo:
                    wanted += [(f"solo-{i:03d}", SOLO) for i in range(SOLO_VMS)]
                start = time.time()
                creating = asyncio.create_task(create_all(admin, wanted, created))
                bound_at = None
                deadline = time.monotonic() + patience
                shown = 0.0
                while True:
                    seen = sum(len(h.seen.keys) for h in hollow)
                    if time.monotonic() - shown > 5:
                        shown = time.monotonic()
                        print(f"... {len(created)} created, {seen} bound, "
                              f"{sum(len(h.seen.running_at) for h in hollow)} Running", file=sys.stderr)
                    if bound_at is None and seen >= vmis:
                        bound_at = time.time()
                    running = sum(len(h.seen.running_at) for h in hollow)
                    if running >= vmis and creating.done() or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.2)
                await creating
                bind_s = (bound_at or time.time()) - start
                latencies = [at - created[vm] for h in hollow for vm, at in h.seen.running_at.items() if vm in created]
                await asyncio.sleep(5.0)  # settle: the last reports' copies delivered
                before, cpu0, t0 = connz(server), cpu_ticks(scheduler.pid), time.monotonic()
                solo0 = cpu_ticks(solo_proc.pid) if solo_proc is not None else 0
                await asyncio.sleep(window)
                after, cpu1, t1 = connz(server), cpu_ticks(scheduler.pid), time.monotonic()
                solo1 = cpu_ticks(solo_proc.pid) if solo_proc is not None else 0
                minutes = (t1 - t0) / 60
                mine = [n for n in after if n.startswith("virtbus-hollow-") and n in before]
                msgs = sum(after[n][k] - before[n][k] for n in mine for k in ("in_msgs", "out_msgs"))
                size = sum(after[n][k] - before[n][k] for n in mine for k in ("in_bytes", "out_bytes"))
                rss = rss_kib(scheduler.pid)
                return Result(
                    nodes=nodes, vmis=vmis, running=sum(len(h.seen.running_at) for h in hollow),
                    foreign=sum(len(h.seen.foreign) for h in hollow),
                    wrong_node=sum(1 for h in hollow for vm in h.seen.running_at
                                   if subjects.node_vmi(h.name, vm) not in h.seen.keys),
                    bind_s=bind_s, p50=percentile(latencies, 0.5), p99=percentile(latencies, 0.99),
                    msgs_per_node_min=msgs / max(len(mine), 1) / minutes,
                    bytes_per_node_min=size / max(len(mine), 1) / minutes,
                    scheduler_cpu=100.0 * (cpu1 - cpu0) / TICKS / (t1 - t0),
                    scheduler_rss_per_vmi_kib=max(rss - base_rss, 0) / max(vmis, 1),
                    solo_cpu=100.0 * (solo1 - solo0) / TICKS / (t1 - t0) if solo_proc is not None else None)
            finally:
                if solo_proc is not None:
                    solo_proc.terminate()
                    solo_proc.wait(10)
                await asyncio.gather(*(h.stop() for h in hollow), return_exceptions=True)
                await admin.close()


def spawn_solo(server: Server, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, __file__, "--solo", server.url,
                                 seed(server, credentials.node_user(SOLO))], stdout=out, stderr=subprocess.STDOUT)


async def run_solo(url: str, creds: str) -> None:
    """One hollow node in a process of its own, for its CPU alone."""
    node = HollowNode(SOLO, url, creds, pool=SOLO)
    await node.start()
    await asyncio.Event().wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--vmis", type=int, default=10000)
    p.add_argument("--window", type=float, default=60.0, help="seconds of steady state measured")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for every VMI Running")
    p.add_argument("--no-solo", action="store_true", help="skip the one-node-with-100-VMs process")
    p.add_argument("--cluster", type=int, choices=(1, 3), default=1,
                   help="3: a 3-server nats cluster, buckets with 3 replicas (the compose lab's)")
    p.add_argument("--legacy", metavar="CHECKOUT", default=None,
                   help="before figures: run this checkout's scheduler (e.g. /work/main) with hollow nodes that "
                        "behave as its handler did (whole-bucket watches, heartbeats in the node record)")
    p.add_argument("--solo", nargs=2, metavar=("URL", "CREDS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.solo:
        asyncio.run(run_solo(*args.solo))
        return
    result = asyncio.run(run(args.nodes, args.vmis, args.window, not args.no_solo and not args.legacy, args.timeout,
                             args.legacy, args.cluster))
    print(f"nats: {'a 3-server cluster, R3' if args.cluster == 3 else 'one server'}")
    print("\n".join(result.lines()))


if __name__ == "__main__":
    main()
