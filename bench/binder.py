"""The binder under load, printed: N Ready nodes and M standalone VMIs, bound by the real scheduler
(``python -m scheduler``, a process of its own, leading alone) against a real nats-server, in two
phases, each on a fresh nats-server:
- backlog: the M VMIs are all created first, then the scheduler starts: binds/s from its first bind
  to its last is the binder's own throughput (not the bench's creation rate);
- burst: the M VMIs are created at once while the scheduler leads, as users would: creation -> bound
  latency P50/P99, and the scheduler's RSS growth per VMI.

The VMIs are written to the ``vmis`` bucket as the API's ``vmi_apply`` writes them (a standalone VMI
record; the API's own validation is left out, it is not what this measures). The nodes are records
whose heartbeats the bench keeps changing, as handlers do, so they stay Ready however long it takes.

Each phase prints binds/s, max over capacity (must be 0), spread against the ideal (M/N per node;
every node and VMI alike), and the CPU the scheduler and nats-server used meanwhile. Usage:
    .venv/bin/python bench/binder.py [--nodes 1000] [--vmis 10000] [--phase both|backlog|burst]
                                     [--server URL --creds SEED --scheduler-creds SEED --phase P]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Iterator, Sequence
from pathlib import Path

import placement_check  # bench/placement_check.py, beside this script
from procstat import TICKS, cpu_ticks, rss_kib  # bench/procstat.py, beside this script

from proto import subjects
from proto.clusterconfig import DEFAULT_CPU_ALLOCATION_RATIO
from proto.errors import ApiError, Code
from proto.quantity import parse_bytes
from proto.spec import VMSpec
from proto.state import VMI, Node
from servicekit import credentials, listenport, natsserver
from servicekit.cancelling import cancel_and_wait
from servicekit.store import Store

REPO = Path(__file__).resolve().parents[1]
NODE_CPUS = 2  # 20 vCPUs at KubeVirt's 10:1: twice the 10 one-vCPU VMIs per node of the defaults
NODE_MEMORY = "32Gi"
VMI_MEMORY = "64Mi"
IN_FLIGHT = 256  # the bench's own writes at a time




def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else float("nan")


@contextlib.contextmanager
def own_nats_server() -> Iterator[tuple[str, Path, int]]:
    """A nats-server with authentication on, as tests/conftest.py starts one: (url, creds dir, PID)."""
    import socket

    with tempfile.TemporaryDirectory(prefix="virtbus-bench-") as tmp:
        port = listenport.unused_port()
        users = credentials.users_for([])
        keys = credentials.ensure_seeds(Path(tmp) / "creds", users)
        conf = Path(tmp) / "nats.conf"
        credentials.write_server_config(conf, credentials.server_config(
            users, keys, host="127.0.0.1", port=port, store_dir=f"{tmp}/js", server_name=f"bench-{port}"))
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
            yield f"nats://127.0.0.1:{port}", Path(tmp) / "creds", proc.pid
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def scheduler_process(url: str, creds: str | None, profile: str | None,
                      log: str | None = None) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``python -m scheduler``, its logs discarded (it logs every bind, as in production), ended by PID;
    with ``profile``, under py-spy, which writes its flame graph there."""
    env = dict(os.environ)
    env.setdefault("PYTHONPATH", str(REPO))
    args = [sys.executable, "-m", "scheduler", "--server", url, "--lease-duration", "15"]
    if creds:
        args += ["--creds", creds]
    if profile:
        spy = Path(sys.executable).parent / "py-spy"
        # a .txt profile is py-spy's raw (collapsed stacks) format, for reading or grepping
        kind = ["--format", "raw"] if profile.endswith(".txt") else []
        args = [str(spy), "record", "--rate", "200", *kind, "--output", profile, "--", *args]
    with open(log or os.devnull, "wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
    pid = scheduler_pid(proc) if profile else proc.pid
    try:
        yield proc, pid
    finally:
        # the scheduler itself ends first (py-spy then writes its profile and ends too), while the
        # nats-server is still there for its goodbye
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            proc.kill()
            proc.wait()


def scheduler_pid(proc: subprocess.Popen[bytes]) -> int:
    """The scheduler's PID under py-spy: its child."""
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    for _ in range(200):
        found = children.read_text().split() if children.exists() else []
        if found:
            return int(found[0])
        time.sleep(0.05)
    raise RuntimeError("py-spy started no scheduler")


def node(name: str, heartbeat: float, cpus: int = NODE_CPUS) -> Node:
    return Node(name=name, cpus=cpus, memory=parse_bytes(NODE_MEMORY), kvm=False, heartbeat=heartbeat,
                started_at=0.0, labels={"kubernetes.io/hostname": name})


def vmi(name: str) -> VMI:
    return VMI(name=name, uid=str(uuid.uuid4()), spec=VMSpec(name=name, memory=VMI_MEMORY), created_at=time.time(),
               standalone=True)


async def bounded(coros: Sequence[Awaitable[object]], limit: int) -> None:
    gate = asyncio.Semaphore(limit)

    async def one(c: Awaitable[object]) -> None:
        async with gate:
            await c

    await asyncio.gather(*(one(c) for c in coros))


async def heartbeats(store: Store, names: list[str], every: float, cpus: int) -> None:
    """Each node's heartbeat changes every ``every`` seconds, spread over the interval as handlers' are."""
    while True:
        start = time.monotonic()
        for i, name in enumerate(names):
            try:
                await store.nodes.put(name, node(name, time.time(), cpus))
            except ApiError as exc:  # a loaded box answers late: the next beat
                if exc.code is not Code.UNAVAILABLE:
                    raise
            await asyncio.sleep(max(0.0, start + every * (i + 1) / len(names) - time.monotonic()))


class Watched:
    """When the bench saw each VMI bound (the raw bucket, not decoded: the bench must not be what runs
    short of CPU; a bound VMI's stored JSON has a nodeName, an unbound one none: defaults are omitted)."""

    def __init__(self, store: Store, wanted: set[str]) -> None:
        self.store = store
        self.wanted = wanted
        self.bound_at: dict[str, float] = {}
        self.all_bound = asyncio.Event()

    async def run(self) -> None:
        watcher = await self.store.raw[subjects.BUCKET_VMIS].watchall()
        try:
            while True:
                update = await watcher.updates(timeout=None)  # type: ignore[no-untyped-call]
                if update is None or not update.value or update.key in self.bound_at:
                    continue
                if b'"nodeName"' in update.value:
                    self.bound_at[update.key] = time.time()
                    if self.wanted <= self.bound_at.keys():
                        self.all_bound.set()
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]


async def create_all(store: Store, batch: list[VMI]) -> None:
    async def create(v: VMI) -> None:
        for _ in range(10):  # a loaded box may answer late: again (it may have landed: then it exists)
            try:
                await store.vmis.create(v.name, v)
                return
            except ApiError as exc:
                if exc.code is Code.ALREADY_EXISTS:
                    return
                if exc.code is not Code.UNAVAILABLE:
                    raise
                await asyncio.sleep(0.5)
        raise RuntimeError(f"could not create {v.name}")

    await bounded([create(v) for v in batch], IN_FLIGHT)


def cpu_s(pid: int | None) -> float:
    try:
        return cpu_ticks(pid) / TICKS if pid is not None else float("nan")
    except OSError:
        return float("nan")


async def stop(task: asyncio.Task[None]) -> None:
    # a cancel and an await hung this bench in CI: a cancellation landing as a NATS reply does is
    # lost on Python 3.11 (servicekit.cancelling), and the heartbeats went on for good
    await cancel_and_wait([task])


async def run(url: str, creds: str | None, scheduler_creds: str | None, n_nodes: int, n_vmis: int, wait_s: float,
              heartbeat: float, profile: str | None = None, cpus: int = NODE_CPUS, log: str | None = None, *,
              backlog: bool = False, nats_pid: int | None = None) -> bool:
    """One phase. backlog: the VMIs are all there before the scheduler starts, so its binds/s is the
    binder's own throughput; else (a burst) they are created at once while it leads, as users would,
    and the bench's creation rate is part of what it measures."""
    store = await Store.connect(url, "virtbus-bench", creds=creds)
    names = [f"hollow{i:05d}" for i in range(n_nodes)]
    now = time.time()
    await bounded([store.nodes.put(n, node(n, now, cpus)) for n in names], IN_FLIGHT)
    beating = asyncio.create_task(heartbeats(store, names, heartbeat, cpus))
    created_at: dict[str, float] = {}
    wanted = {f"b{i:06d}" for i in range(n_vmis)}
    watched = Watched(store, wanted)

    def made() -> list[VMI]:  # their creation time is now: just before they are written
        batch = [vmi(n) for n in sorted(wanted)]
        created_at.update((v.name, v.created_at) for v in batch)
        return batch

    try:
        if backlog:
            await create_all(store, made())
        created_first = time.time() - now
        watching = asyncio.create_task(watched.run())
        with scheduler_process(url, scheduler_creds, profile, log) as (proc, pid):
            if not backlog:
                # a probe VMI bound: the scheduler leads and has primed its caches (then it goes again)
                await store.vmis.create("probe", vmi("probe"))
                deadline = time.monotonic() + 60
                while (probe := await store.vmis.get("probe")) is None or probe.value.node_name is None:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("the scheduler did not bind a probe VMI within 60 s")
                    await asyncio.sleep(0.1)
                await store.vmis.delete("probe")
            rss_before = rss_kib(pid)
            cpu_before = (cpu_s(pid), cpu_s(nats_pid))
            started = time.time()
            if not backlog:
                await create_all(store, made())
            created = time.time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watched.all_bound.wait(), wait_s)
            done = time.time()
            rss_after = rss_kib(pid)
            cpu_used = (cpu_s(pid) - cpu_before[0], cpu_s(nats_pid) - cpu_before[1])
            await stop(watching)
        # the heartbeats end first: a read of the whole nodes bucket while they go on once never ended
        # (its consumer's pending count did not come to 0 in 12 minutes)
        await stop(beating)
        vmis = [e.value for e in await store.vmis.items()]
        nodes = {e.key: e.value for e in await store.nodes.items()}
    finally:
        await stop(beating)
        await store.close()

    bound_at = watched.bound_at
    bound = [v for v in vmis if v.node_name]
    placed = placement_check.check(vmis, nodes, DEFAULT_CPU_ALLOCATION_RATIO)
    over = max(placed.over_memory, placed.over_vcpus)
    ideal, spread = placed.ideal, placed.spread_pct
    times = sorted(bound_at[v.name] for v in bound if v.name in bound_at)
    latencies = [bound_at[k] - created_at[k] for k in created_at if k in bound_at]
    window = (times[-1] - times[0]) if len(times) > 1 else float("nan")
    between = f"{len(times) / window:.0f}" if window == window and window > 0 else "n/a"
    if backlog:
        print(f"== backlog: {n_vmis} VMIs created first ({created_first:.1f} s, with the nodes), "
              "then the scheduler started: the binder's throughput")
    else:
        print(f"== burst: {n_vmis} VMIs created at once while the scheduler leads: creation -> bound")
    print(f"nodes {n_nodes}, VMIs {n_vmis} (each {VMI_MEMORY}, 1 vCPU; nodes {cpus} CPUs = {cpus * 10} vCPUs, "
          f"{NODE_MEMORY})")
    print(f"bound: {len(bound)}/{n_vmis}")
    if backlog:
        print(f"binder throughput: {between} binds/s from the first bind to the last ({window:.2f} s); "
              f"{done - started:.2f} s from the scheduler's start to all bound")
    else:
        print(f"creating them took {created - started:.2f} s")
        print(f"time to all bound (from the first creation): {done - started:.2f} s")
        print(f"binds/s: {len(bound) / (done - started):.0f} overall; {between} between the first and last bind")
    print(f"max over capacity: {over}")
    print(f"spread: max deviation from the ideal {ideal:.2f} per node: {spread:.1f} %")
    per_bind = 1000 / max(len(times), 1)
    print(f"CPU meanwhile: scheduler {cpu_used[0]:.1f} s ({cpu_used[0] * per_bind:.2f} ms per bind), nats-server "
          f"{cpu_used[1]:.1f} s ({cpu_used[1] * per_bind:.2f} ms per bind; the bench's own writes included)")
    if not backlog:
        print(f"scheduler RSS: {rss_before / 1024:.1f} MiB before, {rss_after / 1024:.1f} MiB after; "
              f"{(rss_after - rss_before) * 1024 / max(n_vmis, 1) / 1024:.1f} KiB per VMI")
        print(f"bind latency (created -> bench saw the bind): P50 {percentile(latencies, 50) * 1000:.0f} ms, "
              f"P99 {percentile(latencies, 99) * 1000:.0f} ms")
    return len(bound) == n_vmis and over == 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/binder.py")
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--vmis", type=int, default=10000)
    p.add_argument("--server", default=None, help="a running nats-server's URL (default: start one)")
    p.add_argument("--creds", default=None, help="the admin seed for --server")
    p.add_argument("--scheduler-creds", default=None, help="the control plane's seed for --server")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for all bound")
    p.add_argument("--heartbeat", type=float, default=5.0, help="seconds between a node's heartbeats")
    p.add_argument("--py-spy", default=None, metavar="SVG", help="profile the scheduler with py-spy into SVG")
    p.add_argument("--scheduler-log", default=None, metavar="FILE", help="the scheduler's log (default: discarded)")
    p.add_argument("--node-cpus", type=int, default=NODE_CPUS,
                   help="each node's CPUs (10 vCPUs each); 1 with 10 VMIs per node fills every node exactly")
    p.add_argument("--phase", choices=("both", "backlog", "burst"), default="both",
                   help="backlog: VMIs created before the scheduler starts (the binder's throughput); burst: "
                        "created at once while it leads (creation -> bound latency); both: one then the other, "
                        "each on a fresh nats-server (not with --server)")
    args = p.parse_args(argv)
    # a TERM ends it as an interrupt would: the scheduler and nats-server it started end with it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.nodes < 1 or args.vmis < 1 or args.node_cpus < 1:
        p.error("--nodes, --vmis and --node-cpus must be positive")
    if args.server and args.phase == "both":
        p.error("with --server, one --phase a run (each needs a server of its own)")
    ok = True
    for phase in ("backlog", "burst"):
        if args.phase not in ("both", phase):
            continue
        # each phase's profile and log a file of its own when both run
        profile, log = ((f"{f}.{phase}" if f and args.phase == "both" else f)
                        for f in (args.py_spy, args.scheduler_log))
        if args.server:
            ok &= asyncio.run(run(args.server, args.creds, args.scheduler_creds, args.nodes, args.vmis, args.timeout,
                                  args.heartbeat, profile, args.node_cpus, log, backlog=phase == "backlog"))
            continue
        with own_nats_server() as (url, creds_dir, nats_pid):
            ok &= asyncio.run(run(url, str(credentials.seed_path(creds_dir, "admin")),
                                  str(credentials.seed_path(creds_dir, "control")), args.nodes, args.vmis,
                                  args.timeout, args.heartbeat, profile, args.node_cpus, log,
                                  backlog=phase == "backlog", nats_pid=nats_pid))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
