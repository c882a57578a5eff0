"""Hollow nodes (kubemark), BENCHMARK TOOLING: N hollow nodes (bench/hollow.py: the handler's
registration, heartbeat and scoped watch, the launcher simulated), spread over ``--procs`` processes
(bench/hollow_fleet.py) against its own nats-server (authentication on, one user per node), the real
scheduler and API (``python -m scheduler``); M VMs created through the API at once (``--create api``,
200 clients), or M standalone VMIs written into the ``vmis`` bucket at once by an admin's NATS client, as
the API's VMI create stores them (``--create bus``: the creates then take under a second, so the bind path
alone, not the API's create rate on this shared box, is the pace). Prints
creation->Running P50/P99, binds/s (as the nodes heard them, and as the control plane stored them: the
bind writes read back from the vmis stream), the CPU each kind of process spent binding (per VM) and
the rates those costs leave room for on this box's cores, steady-state messages and bytes per node per minute
(nats-server's /connz, per connection), the scheduler's CPU and RSS per VMI, one solo hollow node's
CPU with 100 VMs (its own process), and what nats-server logged about dropped clients. Fails (exit 1,
saying why, with counts) when nodes lose their connections, a process dies or nothing moves.
Usage:
    .venv/bin/python bench/hollow_nodes.py [--nodes 1000] [--vmis 10000] [--window 60] [--procs N]
                                         [--cluster 3] [--create api|bus] [--logs DIR]
                                         [--nodes-cpu-weight SHARES]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nats
from nats.aio.client import Client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from binder import IN_FLIGHT  # noqa: E402 - bench/binder.py, beside this script
from binder import create_all as write_vmis  # noqa: E402
from boxspeed import BoxSpeed  # noqa: E402 - bench/boxspeed.py
from hollow import POOL, POOL_LABEL, HollowNode, percentile  # noqa: E402 - bench/hollow.py, beside this script
from hollow_fleet import BenchFailed, CpuMeter, Fleet, Watchdog, worker_main  # noqa: E402
from hollow_nats import Server, connz, dead, last_bind_stored, last_copy_stored, nats_server, trouble  # noqa: E402
from placement_check import check as check_placement  # noqa: E402 - bench/placement_check.py
from procstat import TICKS, cpu_ticks, rss_kib, total_cpu_ticks  # noqa: E402 - bench/procstat.py

from proto import subjects  # noqa: E402
from proto.clusterconfig import DEFAULT_CPU_ALLOCATION_RATIO  # noqa: E402
from proto.manifest import parse_instance  # noqa: E402
from proto.state import VMI  # noqa: E402
from servicekit import cpugroup, credentials  # noqa: E402
from servicekit.store import Store  # noqa: E402

SOLO = "solo"
SOLO_VMS = 100


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



def instance_spec(node: str | None) -> dict[str, object]:
    spec: dict[str, object] = {"domain": {"devices": {}, "resources": {"requests": {"memory": "64Mi"}}}}
    spec["nodeSelector"] = {"kubernetes.io/hostname": node} if node is not None else {POOL_LABEL: POOL}
    return spec


def vm_manifest(name: str, node: str | None) -> bytes:
    return json.dumps({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": name},
                       "spec": {"runStrategy": "Always", "template": {"spec": instance_spec(node)}}}).encode()


def vmi_record(name: str, node: str | None) -> VMI:
    """A standalone VMI as the API's VMI create stores it (scheduler/api.py, vmi_apply)."""
    spec = parse_instance(json.dumps({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                                      "metadata": {"name": name}, "spec": instance_spec(node)}).encode())
    return VMI(name=spec.name, uid=str(uuid.uuid4()), spec=spec, created_at=time.time(), standalone=True)


@dataclass
class Result:
    nodes: int
    vmis: int
    create: str  # api or bus
    create_s: float  # from the first create to the last one answered
    running: int
    foreign: int  # updates a hollow node heard about another node's VMIs: must be 0
    wrong_node: int  # VMIs a hollow node reported Running that are not bound to it: must be 0
    bind_s: float
    # seconds from the first create to the control plane's last bind landed, and the binds (None: unknown)
    committed: tuple[float, int] | None
    p50: float
    p99: float
    msgs_per_node_min: float
    bytes_per_node_min: float
    scheduler_cpu: float
    scheduler_rss_per_vmi_kib: float
    solo_cpu: float | None
    procs: int
    reconnects: int  # hollow nodes' connections lost and regained during the run: 0 in a clean run
    steady_cpu: str  # nats-server's, the scheduler's and the hollow processes' CPU in the steady state
    writes: dict[str, int]  # messages stored into each stream from the first create to the settle
    server_log: str  # what nats-server logged about dropped or struggling clients
    bind_cpu: dict[str, float] = field(default_factory=dict)  # CPU-s of each kind, first create to all bound
    # CPU-s of each kind and seconds, first create to all Running: binding's cost shifts work of the nodes'
    # (launch, report) past "all bound" when it is slower, not this
    run_cpu: dict[str, float] = field(default_factory=dict)
    run_s: float = 0.0
    node_traffic: tuple[int, int, int] = (0, 0, 0)  # messages to, bytes to, messages from the nodes, as writes
    refused_watches: int = 0  # a hollow node's watch the server refused for its consumer limit: 0 in a clean run
    register_s: float = 0.0  # from the first registration to the last
    register_cpu: dict[str, float] = field(default_factory=dict)  # CPU-s of each kind meanwhile
    wave: int = 0  # registrations at once
    grouping: str = ""  # the hollow workers' CPU group, if they had one
    placement: str = ""  # over capacity and spread, from the stored VMIs and nodes (bench/placement_check.py)
    speed: str = ""  # how fast the box was (bench/boxspeed.py)
    # seconds from the first create to the control plane's last copy of a bind in a node's shard (None: unknown)
    copied: float | None = None
    held: str = ""  # what nats-server holds after the steady state: its memory, the streams' consumers

    def lines(self) -> list[str]:
        return [
            f"hollow nodes: {self.nodes}, VMIs: {self.vmis}, Running: {self.running}, "
            f"updates about another node's VMIs: {self.foreign}, reported on the wrong node: {self.wrong_node}",
            *([self.grouping] if self.grouping else []),
            register_line(self.register_cpu, self.nodes, self.wave, self.register_s),
            f"created in {self.create_s:.1f} s ({CREATED_BY[self.create]})",
            f"all bound in {self.bind_s:.1f} s ({self.vmis / max(self.bind_s, 1e-9):.0f} binds/s, "
            "creation to bound as the nodes heard it)",
            committed_line(self.committed),
            copied_line(self.copied, self.vmis),
            *([self.placement] if self.placement else []),
            f"creation->Running: P50 {self.p50:.2f} s, P99 {self.p99:.2f} s",
            *bind_cpu_lines(self.bind_cpu, self.vmis, self.bind_s),
            *run_cpu_lines(self.run_cpu, self.vmis, self.run_s),
            f"steady state per node per minute: {self.msgs_per_node_min:.0f} messages, "
            f"{self.bytes_per_node_min / 1024:.1f} KiB",
            *([self.held] if self.held else []),
            "JetStream writes per VM, creation to Running: " + writes_line(self.writes, self.vmis),
            traffic_line(*self.node_traffic, self.vmis),
            f"scheduler: {self.scheduler_cpu:.1f} % of a core, RSS {self.scheduler_rss_per_vmi_kib:.1f} KiB per VMI",
            "one hollow handler with 100 VMs: " + (f"{self.solo_cpu:.2f} % of a core" if self.solo_cpu is not None
                                                   else "not measured"),
            f"hollow processes: {self.procs}; connections lost and regained: {self.reconnects}; steady-state "
            + self.steady_cpu,
            f"watches refused for a stream's consumer limit (10026, then tried again): {self.refused_watches}",
            self.server_log,
            *([self.speed] if self.speed else []),
        ]


def run_cpu_lines(cpu: dict[str, float], vms: int, run_s: float) -> list[str]:
    """Each kind's CPU per VM through Running: the whole of a VM's cost, which the bind phase's figures
    split at an instant that moves with the pace."""
    if not cpu or vms <= 0:
        return []
    return [f"CPU from the first create to all Running ({run_s:.1f} s): "
            + ", ".join(f"{kind} {1000.0 * s / vms:.2f}" for kind, s in cpu.items()) + " ms per VM"]


def register_line(cpu: dict[str, float], nodes: int, wave: int, seconds: float) -> str:
    """What the nodes' registration cost: each registration is the control plane's work (a network
    claimed, the record written) and every registered node's (it hears of each new node's record); the
    hollow processes' figure includes their own start (an interpreter and its imports each)."""
    if not cpu or nodes <= 0:
        return "registration: not measured"
    return (f"registered {nodes} nodes in {seconds:.1f} s ({wave} at once); CPU per registration: "
            + ", ".join(f"{kind} {1000.0 * s / nodes:.1f} ms" for kind, s in cpu.items()))


def committed_line(committed: tuple[float, int] | None) -> str:
    """The binds as the control plane made them (kube-scheduler's throughput is counted so): on this
    one box the hollow nodes' hearing of them shares its cores with the control plane, where a real
    node has its own."""
    if committed is None:
        return "all bound by the control plane: not measured (fewer binds in the vmis bucket than VMIs)"
    seconds, binds = committed
    return (f"all bound by the control plane in {seconds:.1f} s ({binds / max(seconds, 1e-9):.0f} binds/s, "
            "creation to the last bind stored in the vmis bucket)")


def copied_line(seconds: float | None, binds: int) -> str:
    """The binds as the control plane copied them to their nodes' shards, which the nodes hear as
    republished: between the binds stored and the binds heard, what is the leader's and what the
    nodes'."""
    if seconds is None:
        return "all copied to the nodes' shards: not measured (fewer copies of binds than VMIs)"
    return (f"all copied to the nodes' shards by the control plane in {seconds:.1f} s "
            f"({binds / max(seconds, 1e-9):.0f} copies/s, creation to the last copy of a bind stored)")


def bind_cpu_lines(cpu: dict[str, float], vms: int, bind_s: float) -> list[str]:
    """What binding cost in CPU, and the rate that caps: every process here shares this box's cores, so
    at this CPU per VM no more than ``cores / CPU per VM`` binds a second fit, and no more than ``cores /
    (nats-server + scheduler)`` even if the nodes and the creating clients were elsewhere, as they are in
    a real cluster (the scheduler alone on one core: ``1 / its CPU per VM``)."""
    if not cpu or vms <= 0:
        return []
    cores = os.cpu_count() or 1
    per_vm = {kind: 1000.0 * s / vms for kind, s in cpu.items()}
    total = sum(per_vm.values())
    control = per_vm.get("nats-server", 0.0) + per_vm.get("scheduler", 0.0)
    sched = per_vm.get("scheduler", 0.0)

    def cap(ms: float, n: int) -> str:
        return f"{1000.0 * n / ms:.0f}" if ms > 0 else "-"

    return [
        f"CPU from the first create to all bound ({bind_s:.1f} s, {cores} cores here): "
        + ", ".join(f"{kind} {s:.1f} CPU-s ({per_vm[kind]:.2f} ms per VM)" for kind, s in cpu.items())
        + f"; busy {100.0 * sum(cpu.values()) / max(bind_s, 1e-9) / cores:.0f} % of the cores",
        f"binds/s these costs allow on {cores} cores: everything here {cap(total, cores)}; nats-server and the "
        f"scheduler alone {cap(control, cores)}; the scheduler alone on one core {cap(sched, 1)}",
    ]


def traffic_line(to_nodes: int, to_bytes: int, from_nodes: int, vms: int) -> str:
    """What nats-server delivered to the hollow nodes and got from them per VM (pure): a cost of
    theirs and its own beside the writes."""
    per = max(vms, 1)
    return (f"the nodes' messages per VM, creation to Running: {to_nodes / per:.1f} delivered "
            f"({to_bytes / 1024 / per:.1f} KiB), {from_nodes / per:.1f} sent")


def writes_line(writes: dict[str, int], vms: int) -> str:
    """Each stream's stored messages per VM, most first, and their sum: every one is a JetStream write
    (a publish the server stores and acknowledges), so where the server's CPU goes per VM. The node
    VMI copies' shards are summed as one."""
    shards = {subjects.kv_stream(b) for b in subjects.NODE_VMI_BUCKETS}
    folded = {name: n for name, n in writes.items() if name not in shards}
    folded[f"{subjects.kv_stream(subjects.BUCKET_NODE_VMIS_UNSHARDED)}-* ({len(shards)} shards)"] = sum(
        n for name, n in writes.items() if name in shards)
    shown = sorted(((n / max(vms, 1), name) for name, n in folded.items() if n), reverse=True)
    return f"{sum(n for n, _ in shown):.2f} (" + ", ".join(f"{name} {n:.2f}" for n, name in shown) + ")"


async def server_holdings(nc: Client, server: Server) -> str:
    """nats-server's memory (each server's, summed) and the consumers its streams hold."""
    consumers = sum(int(info.state.consumer_count or 0) for info in await nc.jetstream().streams_info())
    memory = sum(rss_kib(proc.pid) for proc in server.procs) / 1024
    return f"after the steady state: nats-server {memory:.0f} MiB, {consumers} consumers over its streams"


async def last_sequences(nc: Client) -> dict[str, int]:
    """Each stream's last sequence: the count of messages ever stored in it."""
    return {info.config.name or "": info.state.last_seq for info in await nc.jetstream().streams_info()}


CREATED_BY = {"api": "VMs through the API, 200 clients", "bus": "standalone VMIs written into the vmis bucket, "
                                                               f"{IN_FLIGHT} at a time"}


async def write_all(store: Store, names: list[tuple[str, str | None]], created: dict[str, float]) -> None:
    """Each VMI written into the bucket as the API's VMI create writes it, by an admin's client, as
    bench/binder.py writes its backlog."""
    records = [vmi_record(name, node) for name, node in names]
    await write_vmis(store, records)
    created.update((record.name, record.created_at) for record in records)


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

    # ``parallel`` senders, each sending its next request as soon as its last is answered (as many
    # users would): never a batch waiting for its slowest request while the API has room
    todo = iter(names)

    async def sender() -> None:
        for name, node in todo:
            await one(name, node)

    await asyncio.gather(*(sender() for _ in range(parallel)))


@dataclass
class Options:
    nodes: int
    vmis: int
    window: float
    solo: bool
    patience: float
    legacy: str | None  # a virtbus checkout from before scoped watches and leases: the before figures
    cluster: int = 1
    procs: int = 1
    wave: int = 25
    stall: float = 180.0
    logs: str | None = None
    create: str = "api"  # api: VMs through the API; bus: standalone VMIs written into the bucket
    nodes_weight: int | None = None  # the hollow workers in a CPU group of this weight (None: as any process)
    followed: str = "subscription"  # how the hollow nodes follow the buckets every node follows whole (HollowNode)


async def run(o: Options) -> Result:
    """legacy: its scheduler runs; the hollow nodes behave as its handler did."""
    names = [f"hollow-{i:04d}" for i in range(o.nodes)]
    me = asyncio.current_task()
    assert me is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, me.cancel)  # ended: its processes end too
    with contextlib.ExitStack() as stack:
        if o.logs:
            directory = Path(o.logs)
            directory.mkdir(parents=True, exist_ok=True)
        else:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="virtbus-hollow-")))
        if o.cluster > 1:
            os.environ["VIRTBUS_JS_REPLICAS"] = "3"  # the scheduler makes the buckets R3, as the compose lab
        server = stack.enter_context(nats_server(directory, [*names, SOLO], o.cluster))
        scheduler = stack.enter_context(process(
            [sys.executable, "-m", "scheduler", "--server", server.url, "--creds", seed(server, "control")],
            directory / "scheduler.log", o.legacy))
        try:
            return await measure(o, names, server, scheduler, directory)
        except BenchFailed as exc:
            kept = f"logs kept in {directory}" if o.logs else "pass --logs DIR to keep the logs"
            raise BenchFailed(f"{exc}\n{trouble(server.logs, server.ready_at)}\n{kept}") from None
    raise AssertionError("unreachable")  # mypy: ExitStack may swallow exceptions


class Watch:
    """The run's processes: alive, not stalled, and their CPU shown every few seconds."""

    def __init__(self, o: Options, fleet: Fleet, server: Server, scheduler: subprocess.Popen[bytes],
                 directory: Path) -> None:
        self.o, self.fleet, self.server, self.scheduler, self.directory = o, fleet, server, scheduler, directory
        self.dog = Watchdog(fleet, stall_s=o.stall)
        self.cpu = CpuMeter()
        self.shown = time.monotonic()

    def kinds(self) -> dict[str, list[int]]:
        """The run's processes by kind: what the CPU lines add up."""
        return {"nats-server": [p.pid for p in self.server.procs], "scheduler": [self.scheduler.pid],
                "hollow processes": self.fleet.pids()}

    def cpu_line(self, key: str = "shown") -> str:
        nats_cpu, sched, workers = (self.cpu.read(f"{kind}-{key}", pids) for kind, pids in self.kinds().items())
        return (f"CPU, % of a core: nats-server {nats_cpu:.0f}, scheduler {sched:.0f}, "
                f"{len(self.fleet.workers)} hollow processes {workers:.0f}")

    def cpu_seconds(self) -> dict[str, float]:
        """CPU-s so far of each kind of process, and of this process (the creating clients)."""
        kinds = {**self.kinds(), "this bench process (the creating clients)": [os.getpid()]}
        return {kind: total_cpu_ticks(pids) / TICKS for kind, pids in kinds.items()}

    def check(self, stage: str, *extra: int, moving: bool = True, created: int | None = None) -> None:
        if why := dead(self.server):
            raise BenchFailed(f"{stage}: {why} ({self.fleet.summary()})")
        if self.scheduler.poll() is not None:
            tail = (self.directory / "scheduler.log").read_text(errors="replace")[-2000:]
            raise BenchFailed(f"{stage}: the scheduler exited with {self.scheduler.returncode}; its log ends:\n{tail}")
        self.dog.check(stage, *extra, moving=moving)
        if time.monotonic() - self.shown > 5:
            self.shown = time.monotonic()
            made = f"{created} created; " if created is not None else ""
            print(f"... {stage}: {made}{self.fleet.summary()} | {self.cpu_line()}", file=sys.stderr)


def refused_watches(directory: Path) -> int:
    """How often the hollow processes logged a watch refused with 10026 "maximum consumers limit
    reached" (servicekit.streamlimits): each is one watch tried again a second later."""
    return sum(path.read_text(errors="replace").count("err_code=10026")
               for path in directory.glob("hollow-worker*.log"))


async def measure(o: Options, names: list[str], server: Server, scheduler: subprocess.Popen[bytes],
                  directory: Path) -> Result:
    fleet = Fleet()
    watch = Watch(o, fleet, server, scheduler, directory)
    admin = await nats.connect(server.url.split(","), nkeys_seed=seed(server, "admin"))
    # create=False: the scheduler makes the buckets; two clients making one stream at once on a
    # 3-server cluster left one create unanswered (nats-server 2.15), and the bench died of its timeout
    writer = await Store.connect(server.url, "virtbus-bench", creds=seed(server, "admin"), create=False) \
        if o.create == "bus" else None
    solo_proc: subprocess.Popen[bytes] | None = None
    group = None
    speed = BoxSpeed()
    speed.start()
    try:
        register_start, register_cpu0 = time.time(), watch.cpu_seconds()
        if o.nodes_weight is not None:
            group = cpugroup.make(f"virtbus-bench-hollow-{os.getpid()}", o.nodes_weight)
            if group is None:
                raise BenchFailed("--nodes-cpu-weight: no CPU group can be made here (cgroup v1's cpu hierarchy)")
        await fleet.start(directory, server.url.split(","), lambda n: seed(server, credentials.node_user(n)),
                          names, o.procs, o.wave, o.legacy is not None, group, o.followed)
        deadline = time.monotonic() + o.patience
        while fleet.total("registered") < o.nodes:
            watch.check("registering")
            if time.monotonic() > deadline:
                raise BenchFailed(f"registering: not done in {o.patience:.0f} s ({fleet.summary()})")
            await asyncio.sleep(0.2)
        register_s = time.time() - register_start  # within the loop's 0.2 s
        register_cpu = {k: v - register_cpu0[k] for k, v in watch.cpu_seconds().items()
                        if k in ("nats-server", "scheduler", "hollow processes")}
        if o.solo:
            solo_proc = spawn_solo(server, directory / "solo.log", o.followed)
        await asyncio.sleep(3.0)  # the nodes Ready
        base_rss = rss_kib(scheduler.pid)
        created: dict[str, float] = {}
        wanted: list[tuple[str, str | None]] = [(f"vm-{i:05d}", None) for i in range(o.vmis)]
        if o.solo:
            wanted += [(f"solo-{i:03d}", SOLO) for i in range(SOLO_VMS)]
        sequences = await last_sequences(admin)
        burst0 = connz(server)
        start = time.time()
        cpu_at_start = watch.cpu_seconds()
        creating = asyncio.create_task(write_all(writer, wanted, created) if writer is not None
                                       else create_all(admin, wanted, created))
        bound_at = created_at = None
        bind_cpu: dict[str, float] = {}
        while True:
            watch.check("binding and running", len(created), created=len(created))
            if creating.done():
                await creating  # a refused create raises here
                created_at = created_at or time.time()  # within the loop's 0.2 s
            if bound_at is None and fleet.total("bound") >= o.vmis:
                bound_at = time.time()
                bind_cpu = {k: v - cpu_at_start[k] for k, v in watch.cpu_seconds().items()}
            if fleet.running() >= o.vmis and creating.done():
                run_cpu = {k: v - cpu_at_start[k] for k, v in watch.cpu_seconds().items()}
                run_s = time.time() - start
                break
            if time.monotonic() > deadline:
                raise BenchFailed(f"not every VMI Running in {o.patience:.0f} s: {len(created)} created "
                                  f"({fleet.summary()})")
            await asyncio.sleep(0.2)
        bind_s = (bound_at or time.time()) - start
        running_at = fleet.running_at
        latencies = [at - created[vm] for vm, at in running_at.items() if vm in created]
        await asyncio.sleep(5.0)  # settle: the last reports' copies delivered
        placement = await placement_line(server)
        writes = {name: seq - sequences.get(name, 0) for name, seq in (await last_sequences(admin)).items()}
        vmis_seq = sequences.get(subjects.kv_stream(subjects.BUCKET_VMIS), 0)
        last_bind = await last_bind_stored(admin, vmis_seq, len(wanted))
        last_copy = await last_copy_stored(admin, sequences, len(wanted))
        burst1 = connz(server)
        nodes_seen = [n for n in burst1 if n.startswith("virtbus-hollow-") and n in burst0]
        to_nodes, to_bytes, from_nodes = (sum(burst1[n][k] - burst0[n][k] for n in nodes_seen)
                                          for k in ("out_msgs", "out_bytes", "in_msgs"))
        before, cpu0, t0 = connz(server), cpu_ticks(scheduler.pid), time.monotonic()
        solo0 = cpu_ticks(solo_proc.pid) if solo_proc is not None else 0
        watch.cpu_line("window")
        while time.monotonic() - t0 < o.window:
            watch.check("steady state", moving=False)
            await asyncio.sleep(min(1.0, max(0.0, o.window - (time.monotonic() - t0))))
        after, cpu1, t1 = connz(server), cpu_ticks(scheduler.pid), time.monotonic()
        steady_cpu = watch.cpu_line("window")
        solo1 = cpu_ticks(solo_proc.pid) if solo_proc is not None else 0
        minutes = (t1 - t0) / 60
        mine = [n for n in after if n.startswith("virtbus-hollow-") and n in before]
        msgs = sum(after[n][k] - before[n][k] for n in mine for k in ("in_msgs", "out_msgs"))
        size = sum(after[n][k] - before[n][k] for n in mine for k in ("in_bytes", "out_bytes"))
        rss = rss_kib(scheduler.pid)
        held = await server_holdings(admin, server)
        return Result(
            nodes=o.nodes, vmis=o.vmis, create=o.create, create_s=(created_at or time.time()) - start,
            running=fleet.running(), foreign=fleet.total("foreign"),
            wrong_node=fleet.total("wrong"),
            bind_s=bind_s, committed=None if last_bind is None else (last_bind - start, len(wanted)),
            copied=None if last_copy is None else last_copy - start,
            p50=percentile(latencies, 0.5), p99=percentile(latencies, 0.99),
            msgs_per_node_min=msgs / max(len(mine), 1) / minutes,
            bytes_per_node_min=size / max(len(mine), 1) / minutes,
            scheduler_cpu=100.0 * (cpu1 - cpu0) / TICKS / (t1 - t0),
            scheduler_rss_per_vmi_kib=max(rss - base_rss, 0) / max(o.vmis, 1),
            solo_cpu=100.0 * (solo1 - solo0) / TICKS / (t1 - t0) if solo_proc is not None else None,
            procs=len(fleet.workers), reconnects=fleet.total("reconnects"), steady_cpu=steady_cpu, writes=writes,
            node_traffic=(to_nodes, to_bytes, from_nodes),
            server_log=trouble(server.logs, server.ready_at), bind_cpu=bind_cpu, run_cpu=run_cpu, run_s=run_s,
            refused_watches=refused_watches(directory), register_s=register_s, register_cpu=register_cpu,
            placement=placement, speed=speed.line(), held=held,
            wave=o.wave * o.procs,  # o.wave is per process
            grouping="" if o.nodes_weight is None else
            f"hollow processes: {fleet.grouped} of {len(fleet.workers)} in a CPU group of weight {o.nodes_weight} "
            "(the control plane's processes weigh 1024 each)")
    finally:
        if solo_proc is not None:
            solo_proc.terminate()
            solo_proc.wait(10)
        await fleet.stop()
        if group is not None:
            cpugroup.remove(group)  # empty now: its workers are gone
        await admin.close()
        if writer is not None:
            await writer.close()


async def placement_line(server: Server) -> str:
    """The burst's VMIs as stored, against the hollow nodes (the solo node, whose VMIs are pinned, left
    out): no node over capacity, and how even the spread is (the cluster's default allocation ratio:
    the bench does not change it)."""
    store = await Store.connect(server.url, "virtbus-bench-placement", creds=seed(server, "admin"), create=False)
    try:
        nodes = {e.key: e.value for e in await store.nodes.items() if e.key != SOLO}
        vmis = [e.value for e in await store.vmis.items()]
    finally:
        await store.close()
    return check_placement(vmis, nodes, DEFAULT_CPU_ALLOCATION_RATIO).line()


def spawn_solo(server: Server, log: Path, followed: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, __file__, "--solo", server.url,
                                 seed(server, credentials.node_user(SOLO)), "--followed-by", followed],
                                stdout=out, stderr=subprocess.STDOUT)


async def run_solo(url: str, creds: str, followed: str) -> None:
    """One hollow node in a process of its own, for its CPU alone."""
    node = HollowNode(SOLO, url, creds, pool=SOLO, followed=followed)
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
    p.add_argument("--procs", type=int, default=0,
                   help="processes the hollow nodes are spread over (default: one per 100 nodes)")
    p.add_argument("--create", choices=("api", "bus"), default="api",
                   help="api: VMs through the API (200 clients); bus: standalone VMIs written into the vmis "
                        "bucket at once, as the API's VMI create writes them")
    p.add_argument("--wave", type=int, default=25, help="registrations at once, over all the processes")
    p.add_argument("--nodes-cpu-weight", type=int, default=None, metavar="SHARES",
                   help="the hollow workers in a CPU group of this weight (cgroup v1 cpu.shares), as if on "
                        "machines of their own (kubemark's): the control plane first")
    p.add_argument("--stall", type=float, default=180.0,
                   help="fail when no count moves for this many seconds (registered, bound, Running, created)")
    p.add_argument("--logs", metavar="DIR", default=None,
                   help="write nats-server's, the scheduler's and the hollow processes' logs here and keep them")
    p.add_argument("--followed-by", choices=("subscription", "consumer"), default="subscription",
                   help="how the hollow nodes follow the buckets every node follows whole (Services, node ports, "
                        "...): as their streams republish them, as the handler does, or a consumer each (before)")
    p.add_argument("--solo", nargs=2, metavar=("URL", "CREDS"), help=argparse.SUPPRESS)
    p.add_argument("--worker", metavar="SPEC", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.solo:
        url, creds = args.solo
        asyncio.run(run_solo(url, creds, args.followed_by))
        return
    if args.worker:
        worker_main(args.worker)
        return
    if args.nodes_cpu_weight is not None and not 2 <= args.nodes_cpu_weight <= 262144:
        p.error("--nodes-cpu-weight: cpu.shares goes from 2 to 262144")
    procs = args.procs or max(1, -(-args.nodes // 100))
    try:
        result = asyncio.run(run(Options(
            nodes=args.nodes, vmis=args.vmis, window=args.window, solo=not args.no_solo and not args.legacy,
            patience=args.timeout, legacy=args.legacy, cluster=args.cluster, procs=procs,
            wave=max(1, args.wave // procs), stall=args.stall, logs=args.logs, create=args.create,
            nodes_weight=args.nodes_cpu_weight, followed=args.followed_by)))
    except BenchFailed as exc:
        print(f"hollow_nodes: FAILED: {exc}", file=sys.stderr)
        sys.exit(1)
    except asyncio.CancelledError:
        print("hollow_nodes: ended (SIGTERM)", file=sys.stderr)
        sys.exit(143)
    print(f"nats: {'a 3-server cluster, R3' if args.cluster == 3 else 'one server'}")
    print("\n".join(result.lines()))


if __name__ == "__main__":
    main()
