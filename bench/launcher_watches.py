"""What every launcher's watch of its own VMI costs nats-server, printed: as a consumer of its ``vmis``
key each (how launchers watched before launcher.ownvmi), and through its node's copy as the shard
republishes it (launcher.ownvmi), on a nats-server of the bench's own with the lab's users.

--vmis VMIs bound over --nodes nodes, copied to the nodes' shards by the leader's own mirror
(scheduler.nodevmis) running here; the launchers' watches made over one connection per node with
that node's credentials (each real launcher has a connection of its own: the same for both ways).
For each way, printed: the time and nats-server's CPU to start every watch and to have its first
value; over --idle seconds of nothing happening, nats-server's share of a core and the messages
the launchers' connections got, and nats-server's memory and consumers of ``vmis`` after; then one change to
every VMI (a pause asked): the time until every launcher heard its own, nats-server's CPU.
Usage:
    .venv/bin/python bench/launcher_watches.py [--vmis 10000] [--nodes 100] [--idle 20]
                                               [--way both|consumer|copy]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import entry  # noqa: E402 - bench/entry.py, beside this script
from hollow_nats import nats_server  # noqa: E402 - bench/hollow_nats.py, beside this script
from procstat import TICKS, cpu_ticks, rss_kib  # noqa: E402 - bench/procstat.py, beside this script

from launcher import ownvmi  # noqa: E402
from proto import subjects  # noqa: E402
from proto.spec import VMSpec  # noqa: E402
from proto.state import VMI, Phase  # noqa: E402
from scheduler.nodevmis import NodeVmiMirror  # noqa: E402
from servicekit import credentials, kvwatch  # noqa: E402
from servicekit.store import Store  # noqa: E402

IN_FLIGHT = 200  # the bench's own writes and watch starts at a time
WAYS = ("consumer", "copy")


def vmi(name: str, node: str, *, paused: bool = False) -> VMI:
    return VMI(name=name, uid=f"{name}-u", spec=VMSpec(name=name), created_at=0.0, phase=Phase.RUNNING,
               node_name=node, pause_requested=paused, pause_generation=int(paused))


def watch(way: str, store: Store, node: str, name: str) -> AsyncIterator[bool]:
    """Whether the VMI asks to be paused, as the launcher of ``name`` hears it, one way or the other."""
    async def consumer() -> AsyncIterator[bool]:
        async for change in store.vmis.watch(name):
            yield change.value is not None and change.value.pause_requested

    async def copy() -> AsyncIterator[bool]:
        async for value in ownvmi.changes(store, node, name):
            yield not isinstance(value, ownvmi.Gone) and value.pause_requested

    return consumer() if way == "consumer" else copy()


class Launchers:
    """The launchers' watches; how many have heard their VMI at all, and paused."""

    def __init__(self) -> None:
        self.first: set[str] = set()
        self.paused: set[str] = set()
        self.tasks: list[asyncio.Task[None]] = []

    def start(self, way: str, store: Store, node: str, name: str) -> None:
        async def follow() -> None:
            async for paused in watch(way, store, node, name):
                self.first.add(name)
                if paused:
                    self.paused.add(name)

        self.tasks.append(asyncio.create_task(follow()))

    async def heard(self, count: int) -> None:
        """Until ``count`` launchers have had their VMI's value."""
        await until(lambda: len(self.first) >= count, "the launchers' first values", 120)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def until(check: Callable[[], bool], what: str, within: float) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise entry.BenchError(f"{what}: not within {within:.0f} s")
        await asyncio.sleep(0.05)


async def in_batches(calls: list[Callable[[], Awaitable[object]]]) -> None:
    for start in range(0, len(calls), IN_FLIGHT):
        await asyncio.gather(*(call() for call in calls[start:start + IN_FLIGHT]))


def create(control: Store, name: str, node: str) -> Callable[[], Awaitable[object]]:
    return lambda: control.vmis.create(name, vmi(name, node))


def pause(control: Store, name: str, node: str) -> Callable[[], Awaitable[object]]:
    return lambda: control.vmis.mutate(name, lambda _: vmi(name, node, paused=True))


async def consumer_count(store: Store) -> int:
    info = await store.js.stream_info(subjects.kv_stream(subjects.BUCKET_VMIS))
    return int(info.state.consumer_count or 0)


async def one_way(way: str, args: argparse.Namespace) -> None:
    nodes = [f"node{i}" for i in range(args.nodes)]
    names = [(f"vm{i}", nodes[i % args.nodes]) for i in range(args.vmis)]
    with tempfile.TemporaryDirectory(prefix="virtbus-lwatch-") as tmp, nats_server(Path(tmp), nodes) as server:
        pid = server.procs[0].pid
        control = await Store.connect(server.url, "virtbus-bench-control", inbox=subjects.inbox_prefix("control"),
                                      creds=str(credentials.seed_path(server.creds, "control")))
        mirror = asyncio.create_task(NodeVmiMirror(control).run())
        node_stores: dict[str, Store] = {}
        launchers = Launchers()
        try:
            await in_batches([create(control, n, node) for n, node in names])
            for node in nodes:
                node_stores[node] = await Store.connect(
                    server.url, f"virtbus-bench-{node}", creds=str(credentials.seed_path(server.creds, f"node-{node}")),
                    inbox=subjects.inbox_prefix("node", node), create=False, check=False)
            if way == "copy":  # the launchers start once their node heard of their VMI: its copy is there
                for node in nodes:
                    await until_copied(control, node, sum(1 for _, n in names if n == node))
            server_cpu, t0 = cpu_ticks(pid), time.monotonic()
            for start in range(0, len(names), IN_FLIGHT):
                for n, node in names[start:start + IN_FLIGHT]:
                    launchers.start(way, node_stores[node], node, n)
                await launchers.heard(min(len(names), start + IN_FLIGHT))
            started = time.monotonic() - t0
            start_cpu = (cpu_ticks(pid) - server_cpu) / TICKS
            print(f"{way}: {args.vmis} launchers' watches started and each had its VMI in {started:.1f} s; "
                  f"nats-server {start_cpu:.2f} CPU-s for it ({1000 * start_cpu / args.vmis:.2f} ms a launcher)",
                  flush=True)
            got = sum(s.nc.stats["in_msgs"] for s in node_stores.values())
            server_cpu, t0 = cpu_ticks(pid), time.monotonic()
            await asyncio.sleep(args.idle)
            idle = time.monotonic() - t0
            got = sum(s.nc.stats["in_msgs"] for s in node_stores.values()) - got
            print(f"{way}: idle {idle:.0f} s: nats-server {100 * (cpu_ticks(pid) - server_cpu) / TICKS / idle:.1f} % "
                  f"of a core; the launchers' connections got {got} messages "
                  f"({60 * got / idle / args.vmis:.1f} a launcher a minute); then nats-server "
                  f"{rss_kib(pid) / 1024:.0f} MiB, {await consumer_count(control)} consumers of vmis", flush=True)
            server_cpu, t0 = cpu_ticks(pid), time.monotonic()
            await in_batches([pause(control, n, node) for n, node in names])
            written = time.monotonic() - t0
            await until(lambda: len(launchers.paused) == len(names), "every launcher hearing its pause", 120)
            print(f"{way}: a pause asked of every VMI: written in {written:.2f} s, every launcher heard its own "
                  f"in {time.monotonic() - t0:.2f} s; nats-server {(cpu_ticks(pid) - server_cpu) / TICKS:.2f} CPU-s",
                  flush=True)
        finally:
            await launchers.stop()
            mirror.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await mirror
            for s in (*node_stores.values(), control):
                with contextlib.suppress(Exception):
                    await s.close()


async def until_copied(control: Store, node: str, want: int) -> None:
    """The leader has copied every VMI of ``node`` to its shard."""
    deadline = time.monotonic() + 120
    bucket = subjects.node_vmis_bucket(node)
    while True:
        listed = await kvwatch.listed(control.js, subjects.kv_stream(bucket), subjects.kv_subject(bucket),
                                      subjects.node_vmis_of_node(node))
        if listed is not None and len(listed[0]) >= want:
            return
        if time.monotonic() > deadline:
            raise entry.BenchError(f"the leader did not copy {node}'s VMIs")
        await asyncio.sleep(0.1)


async def main(args: argparse.Namespace) -> None:
    if args.vmis < 1 or args.nodes < 1 or args.idle < 0:
        raise entry.BenchError("need --vmis >= 1, --nodes >= 1 and --idle >= 0")
    for way in WAYS if args.way == "both" else (args.way,):
        await one_way(way, args)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vmis", type=int, default=10_000)
    p.add_argument("--nodes", type=int, default=100)
    p.add_argument("--idle", type=float, default=20.0)
    p.add_argument("--way", choices=("both", *WAYS), default="both")
    return p.parse_args(argv)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    entry.run(lambda: asyncio.run(main(parse(sys.argv[1:]))), "launcher_watches.py")
