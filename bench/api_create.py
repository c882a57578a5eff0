"""The API's create path under load, printed: its own nats-server (authentication on), the real
scheduler (``python -m scheduler``, leading alone, or ``--replicas`` of them), and N VirtualMachines
created through ``virtbus.api.vm.create`` by M concurrent clients, each sending its next request as
soon as its last is answered (as bench/hollow_nodes.py's creator does).

``--strategy Halted`` (the default) measures the API alone: no instance is made. ``Always`` makes
each VM's instance too (the VM controller) with no node to bind it to: what the leader does per
created VM besides answering.

Prints creates/s, request latency P50/P99, and the scheduler processes' CPU per create (ms) and
while it ran (% of a core). ``--profile FILE``: the (first) scheduler under py-spy, a flame graph.
Usage:
    .venv/bin/python bench/api_create.py [--vms 5000] [--clients 200] [--strategy Halted|Always]
                                         [--replicas 1] [--profile FILE.svg]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import nats
from nats.aio.client import Client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from binder import cpu_s, percentile, scheduler_process  # noqa: E402 - bench/binder.py, beside this script
from hollow_nats import nats_server  # noqa: E402

from proto import subjects  # noqa: E402
from servicekit import credentials  # noqa: E402


def manifest(name: str, strategy: str) -> bytes:
    spec = {"domain": {"devices": {}, "resources": {"requests": {"memory": "64Mi"}}}}
    return json.dumps({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": name},
                       "spec": {"runStrategy": strategy, "template": {"spec": spec}}}).encode()


async def create_all(nc: Client, names: list[str], clients: int, strategy: str,
                     latencies: list[float]) -> int:
    """Every name created by ``clients`` concurrent senders; the retries a busy answer asked for."""
    queue = list(reversed(names))
    retries = 0

    async def client() -> None:
        nonlocal retries
        while queue:
            name = queue.pop()
            body = manifest(name, strategy)
            for _ in range(50):
                t = time.perf_counter()
                msg = await nc.request(subjects.api("vm", "create"), body, timeout=60)
                reply = json.loads(msg.data)
                if "item" in reply:
                    latencies.append(time.perf_counter() - t)
                    break
                if not reply.get("error", {}).get("retryable"):
                    raise RuntimeError(f"{name}: {reply}")
                retries += 1
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError(f"{name}: still busy after 50 tries")

    await asyncio.gather(*(client() for _ in range(clients)))
    return retries


async def ready(nc: Client, deadline_s: float = 60.0) -> None:
    """The API answers (a list), and a VM can be created: the scheduler is up."""
    deadline = time.monotonic() + deadline_s
    while True:
        with contextlib.suppress(nats.errors.TimeoutError, nats.errors.NoRespondersError):
            msg = await nc.request(subjects.api("vm", "list"), b"{}", timeout=2)
            if "items" in json.loads(msg.data):
                return
        if time.monotonic() > deadline:
            raise RuntimeError("the API did not answer within 60 s")
        await asyncio.sleep(0.2)


async def run(n: int, clients: int, strategy: str, replicas: int, profile: str | None) -> None:
    with tempfile.TemporaryDirectory(prefix="virtbus-api-create-") as tmp, \
            nats_server(Path(tmp), []) as server, contextlib.ExitStack() as stack:
        control = str(credentials.seed_path(server.creds, "control"))
        pids = [stack.enter_context(scheduler_process(server.url, control, profile if i == 0 else None))[1]
                for i in range(replicas)]
        nc = await nats.connect(server.url, nkeys_seed=str(credentials.seed_path(server.creds, "admin")))
        try:
            await ready(nc)
            await asyncio.sleep(2.0)  # the leader's term begun, its caches primed
            latencies: list[float] = []
            cpu0 = sum(cpu_s(p) for p in pids)
            nats0 = cpu_s(server.procs[0].pid)
            t0 = time.perf_counter()
            retries = await create_all(nc, [f"vm-{i:05d}" for i in range(n)], clients, strategy, latencies)
            elapsed = time.perf_counter() - t0
            cpu = sum(cpu_s(p) for p in pids) - cpu0
            nats_cpu = cpu_s(server.procs[0].pid) - nats0
            stored = len(await (await nc.jetstream().key_value(subjects.BUCKET_VMS)).keys())
        finally:
            await nc.close()
    print(f"{n} VMs (runStrategy {strategy}) created through the API by {clients} concurrent clients, "
          f"{replicas} scheduler process(es)")
    print(f"VMs stored: {stored}/{n}")
    print(f"creates/s: {n / elapsed:.0f} ({elapsed:.1f} s); busy answers retried: {retries}")
    print(f"request latency: P50 {percentile(latencies, 50) * 1000:.1f} ms, "
          f"P99 {percentile(latencies, 99) * 1000:.1f} ms")
    print(f"scheduler CPU: {cpu / n * 1000:.2f} ms per create, {100 * cpu / elapsed:.0f} % of a core meanwhile; "
          f"nats-server {100 * nats_cpu / elapsed:.0f} %")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vms", type=int, default=5000)
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--strategy", choices=("Halted", "Always"), default="Halted")
    p.add_argument("--replicas", type=int, default=1, help="scheduler processes (API replicas in a queue group)")
    p.add_argument("--profile", metavar="FILE.svg", default=None, help="the first scheduler under py-spy record")
    args = p.parse_args()
    asyncio.run(run(args.vms, args.clients, args.strategy, args.replicas, args.profile))


if __name__ == "__main__":
    main()
