"""KubeVirt's sig-performance lane: N minimal VMIs (examples/testvmi.yaml, the seed testvm's shape)
created through the API ``--interval`` apart; creation->Running P50/P95/max, the same per stage
(from each VMI's status: created, PodScheduled, its launcher's process start and readiness, started),
and the API's latency meanwhile (a prober sends ``vmi get`` every 100 ms on a connection of its own).
Everything it created is deleted at the end, also when it fails. VMIs the cluster has no room for
(all that is left Unschedulable, nothing changing for 10 s) end the wait with that said, not --timeout.

Against a running lab (scripts/lab.sh), or one of its own for the run (--own-lab):
    .venv/bin/python bench/lane.py [--vms 100] [--interval 0.1] [--node node1] [--server URL] [--own-lab]
                                   [--cpu-allocation-ratio N] [--state-dir DIR]
With the lab's state directory (the own lab's, or --state-dir, by default scripts/lab.sh's), it also
prints the CPU each launch spent up to Running, from the launchers' logs (bench/launchcost.py): what
tells a slow box from a launch that waited.
--cpu-allocation-ratio applies the KubeVirt CR with that cpuAllocationRatio first (the lab's 2 nodes of
2 CPUs hold 40 one-vCPU VMIs at KubeVirt's default 10; 25 lets 100 in), and the former one after.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import math
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import entry  # noqa: E402 - bench/entry.py, beside this script
import launchcost  # noqa: E402 - bench/launchcost.py, beside this script
import warmlog  # noqa: E402 - bench/warmlog.py, beside this script
from boxspeed import BoxSpeed  # noqa: E402 - bench/boxspeed.py, beside this script

from ctl.client import ApiClient, default_url  # noqa: E402
from ctl.lab import DEFAULT_STATE_DIR  # noqa: E402
from proto.api import Ack, NameRequest, VMIReply  # noqa: E402
from proto.clusterconfig import ClusterConfig, ClusterConfigReply, kubevirt_object  # noqa: E402
from proto.errors import ApiError, Code  # noqa: E402
from proto.manifest import load_manifests  # noqa: E402
from proto.state import FINAL_PHASES, VMI, Phase  # noqa: E402
from servicekit import listenport  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "examples" / "testvmi.yaml"
IMAGE = "quay.io/kubevirt/cirros-container-disk-demo"
# The lane stops waiting once what is left has been Unschedulable, and nothing changed, this long: the
# scheduler tries again as room comes, but none comes in a lane that only adds VMIs.
ROOMLESS_S = 10.0
STAGES = ("accepted->bound", "bound->launcher process", "launcher process->ready", "launcher ready->Running")


def percentile(values: list[float], p: float) -> float:
    """Nearest rank, as the lane's own report takes it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def stages(vmi: VMI) -> dict[str, float] | None:
    """Seconds spent in each stage of a Running VMI's launch, by the times in its status."""
    bound = next((c.last_transition_time for c in vmi.conditions if c.type == "PodScheduled" and c.status == "True"),
                 None)
    marks = [vmi.created_at, bound, vmi.launcher_started_at, vmi.launcher_ready_at, vmi.started_at]
    if any(m is None for m in marks):
        return None
    times = [float(m) for m in marks if m is not None]
    return {name: times[i + 1] - times[i] for i, name in enumerate(STAGES)}


def manifest(name: str, node: str | None) -> bytes:
    doc = load_manifests(MANIFEST.read_bytes())[0]
    assert isinstance(doc, dict)
    doc["metadata"] = {**doc["metadata"], "name": name}
    if node:
        doc["spec"] = {**doc["spec"], "nodeSelector": {"kubernetes.io/hostname": node}}
    return json.dumps(doc).encode()


@dataclass
class Lane:
    names: list[str]
    seen: dict[str, VMI] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    latencies: list[float] = field(default_factory=list)
    timeouts: int = 0
    errors: list[str] = field(default_factory=list)

    def on_change(self, key: str, vmi: VMI | None) -> None:
        if key in self.names:
            if vmi is None:
                self.seen.pop(key, None)
            else:
                self.seen[key] = vmi
            self.changed.set()

    def settled(self) -> bool:
        return all(n in self.seen and arrived(self.seen[n]) for n in self.names)

    def roomless(self) -> bool:
        """Every VMI not settled is Unschedulable, and there is at least one: the cluster is full, and
        nothing of the lane's will end to make room."""
        rest = [v for n in self.names if (v := self.seen.get(n)) is None or not arrived(v)]
        return bool(rest) and all(v is not None and unschedulable(v) for v in rest)


def arrived(vmi: VMI) -> bool:
    """Where the lane stops waiting for one VMI: Running, or ended."""
    return vmi.phase is Phase.RUNNING or vmi.phase in FINAL_PHASES


def unschedulable(vmi: VMI) -> bool:
    return any(c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"
               for c in vmi.conditions)


async def create_all(api: ApiClient, lane: Lane, interval: float, node: str | None) -> None:
    """One create every interval, on a fixed schedule: a slow answer does not delay the next."""
    start = time.monotonic()

    async def one(name: str) -> None:
        try:
            await api.call("vmi", "apply", manifest(name, node), VMIReply)
        except ApiError as exc:
            lane.errors.append(f"{name}: {exc.message}")

    tasks = []
    for i, name in enumerate(lane.names):
        await asyncio.sleep(max(0.0, start + i * interval - time.monotonic()))
        tasks.append(asyncio.create_task(one(name)))
    await asyncio.gather(*tasks)


async def probe(api: ApiClient, lane: Lane, every: float) -> None:
    """A cheap verb (one KV read) every `every` seconds; a timeout counts as its full wait."""
    while True:
        t0 = time.monotonic()
        try:
            await api.call("vmi", "get", NameRequest(name=lane.names[0]), VMIReply)
        except ApiError as exc:
            if exc.code is Code.UNAVAILABLE:
                lane.timeouts += 1
        lane.latencies.append(time.monotonic() - t0)
        await asyncio.sleep(max(0.0, every - (time.monotonic() - t0)))


async def delete_all(api: ApiClient, lane: Lane, patience: float) -> int:
    """Deletes what the lane made and waits for it to be gone; returns how many are left."""
    for name in lane.names:
        with contextlib.suppress(ApiError):
            await api.call("vmi", "delete", NameRequest(name=name), Ack)
    deadline = time.monotonic() + patience
    while lane.seen and time.monotonic() < deadline:
        lane.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(lane.changed.wait(), 1.0)
    return len(lane.seen)


async def launch_costs(lane: Lane, state_dir: str | None,
                       patience: float = 2.0) -> dict[str, launchcost.LaunchCpu] | None:
    """The CPU of each Running VMI's launch, from the lab's launcher logs (None: no logs to read). A
    launcher logs it just after it reports Running, so the last ones may come a moment after the lane
    saw them run."""
    logs = Path(state_dir) / "logs" if state_dir is not None else None
    if logs is None or not logs.is_dir():
        return None
    uids = {v.uid for n in lane.names if (v := lane.seen.get(n)) is not None and v.phase is Phase.RUNNING}
    for _ in range(math.ceil(patience / 0.2)):
        if len(costs := launchcost.read(logs, uids)) >= len(uids):
            return costs
        await asyncio.sleep(0.2)
    return launchcost.read(logs, uids)


def report(lane: Lane, args: argparse.Namespace, elapsed: float,
           costs: dict[str, launchcost.LaunchCpu] | None = None) -> None:
    running = [v for n in lane.names if (v := lane.seen.get(n)) is not None and v.phase is Phase.RUNNING]
    failed = [v for n in lane.names if (v := lane.seen.get(n)) is not None and v.phase in FINAL_PHASES]
    where = args.node or "both nodes"
    print(f"lane: {len(lane.names)} VMIs created {args.interval:.2f}s apart on {where}: {len(running)} Running, "
          f"{len(failed)} failed, {len(lane.names) - len(running) - len(failed)} not Running after {elapsed:.0f}s")
    for v in failed[:5]:
        print(f"  failed {v.name}: {v.reason}")
    waiting = collections.Counter(
        f"{v.phase.value}" + "".join(f" ({c.reason}: {c.message})" for c in v.conditions
                                    if c.type == "PodScheduled" and c.status == "False")
        for n in lane.names if (v := lane.seen.get(n)) is not None and v not in running and v not in failed)
    for why, count in waiting.most_common(3):
        print(f"  {count} still {why}")
    if lane.roomless():
        print("  no room left for them: --own-lab (a lab of the lane's own), fewer --vms or a higher "
              "--cpu-allocation-ratio")
    if lane.errors:  # an unanswered create may still have landed (the Running count says)
        print(f"  {len(lane.errors)} creates got an error or no answer; the first ones:")
    for e in lane.errors[:5]:
        print(f"  not created {e}")
    totals = [v.started_at - v.created_at for v in running if v.started_at is not None]
    if totals:
        print(f"creation->Running: P50 {percentile(totals, 50):.2f}s, P95 {percentile(totals, 95):.2f}s, "
              f"max {max(totals):.2f}s")
    split = [s for v in running if (s := stages(v)) is not None]
    if split:
        print(f"  {'stage':<26} {'P50':>7} {'P95':>7} {'max':>7}")
        for name in STAGES:
            values = [s[name] for s in split]
            print(f"  {name:<26} {percentile(values, 50):>6.2f}s {percentile(values, 95):>6.2f}s "
                  f"{max(values):>6.2f}s")
    if running and costs is not None:
        print(f"  {launchcost.summary(costs.values(), len(running), percentile)}")
    elif running and args.state_dir is not None:
        print(f"  launch CPU to Running: no lab logs at {Path(args.state_dir) / 'logs'} (--state-dir: the lab's)")
    if lane.latencies:
        ms = [x * 1000 for x in lane.latencies]
        print(f"API latency (vmi get every {args.probe_every:.1f}s, {len(ms)} calls, {lane.timeouts} timeouts): "
              f"p50 {percentile(ms, 50):.1f} ms, p99 {percentile(ms, 99):.1f} ms, max {max(ms):.1f} ms")


async def apply_ratio(api: ApiClient, config: ClusterConfig) -> ClusterConfig:
    """The KubeVirt CR with ``config``'s cpuAllocationRatio applied, as a user would; the one before."""
    before = (await api.call("kubevirt", "get", {}, ClusterConfigReply)).item
    await api.call("kubevirt", "apply", json.dumps(kubevirt_object(config)).encode(), ClusterConfigReply)
    return before


async def run(args: argparse.Namespace, url: str, creds: str | None) -> int:
    if args.state_dir is not None:
        # a node up a while when its burst comes has long refilled its warm memory: so is this lab's
        print(await asyncio.to_thread(warmlog.settled_line, Path(args.state_dir)), flush=True)
    api = await ApiClient.connect(url, creds)
    before = None
    if args.cpu_allocation_ratio is not None:
        before = await apply_ratio(api, ClusterConfig(cpu_allocation_ratio=args.cpu_allocation_ratio))
        print(f"KubeVirt CR applied: cpuAllocationRatio {args.cpu_allocation_ratio} "
              f"(was {before.cpu_allocation_ratio})", flush=True)
    try:
        return await run_lane(api, args, url, creds)
    finally:
        if before is not None:
            await apply_ratio(api, before)
            print(f"KubeVirt CR restored: cpuAllocationRatio {before.cpu_allocation_ratio}")
        await api.close()


async def run_lane(api: ApiClient, args: argparse.Namespace, url: str, creds: str | None) -> int:
    prober = await ApiClient.connect(url, creds)  # a connection of its own, as another user's
    lane = Lane([f"{args.prefix}-{i:03d}" for i in range(args.vms)])
    watch = asyncio.create_task(api.watch_vmis(lane.on_change))
    speed = BoxSpeed()
    speed.start()
    probing = asyncio.create_task(probe(prober, lane, args.probe_every))
    t0 = time.monotonic()
    try:
        await create_all(api, lane, args.interval, args.node)
        quiet = time.monotonic()  # since the last change
        while not lane.settled() and time.monotonic() - t0 < args.timeout:
            if lane.roomless() and time.monotonic() - quiet >= ROOMLESS_S:
                break  # waiting out --timeout would say no more
            lane.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lane.changed.wait(), 1.0)
                quiet = time.monotonic()
        probing.cancel()
        elapsed = time.monotonic() - t0
        report(lane, args, elapsed, await launch_costs(lane, args.state_dir))
        ok = lane.settled() and not lane.errors and all(lane.seen[n].phase is Phase.RUNNING for n in lane.names)
    finally:
        probing.cancel()
        t_delete = time.monotonic()
        left = await delete_all(api, lane, args.timeout)
        print(f"deleted {len(lane.names) - left} of {len(lane.names)} VMIs in {time.monotonic() - t_delete:.1f}s"
              + (f"; {left} still there" if left else ""))
        print(speed.line(), flush=True)  # once its VMs are gone: their guests' boots would weigh on it
        watch.cancel()
        await prober.close()
    return 0 if ok and not left else 1


@contextlib.contextmanager
def own_lab(nodes: int) -> Iterator[tuple[str, str, Path]]:
    """A lab for this run only, made and removed as tests/e2e's lab fixture does: its URL, its admin's
    credentials and its state directory."""
    disk = os.environ.get("VIRTBUS_GUEST_DISK") or subprocess.run(
        ["bash", str(REPO / "guest" / "build.sh")], capture_output=True, text=True, check=True).stdout.split()[-1]
    state = Path(tempfile.mkdtemp(prefix="virtbus-lane-"))
    prefix = f"vbl{secrets.token_hex(3)}"
    port = listenport.unused_port()  # outside the ephemeral range, as the lab's own ports
    lab = [sys.executable, "-m", "ctl", "lab"]
    try:
        subprocess.run([*lab, "up", "--nodes", str(nodes), "--state-dir", str(state), "--prefix", prefix,
                        "--port", str(port), "--probe-kernel", str(Path(disk).with_name("bzImage"))],
                       check=True, cwd=REPO, stdout=subprocess.DEVNULL)
        url, creds = f"nats://127.0.0.1:{port}", str(state / "creds" / "admin.nk")
        subprocess.run([sys.executable, "-m", "ctl", "--server", url, "--creds", creds, "image", "import", IMAGE,
                        "--file", disk], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
        yield url, creds, state
    finally:
        subprocess.run([*lab, "down", "--state-dir", str(state)], cwd=REPO, stdout=subprocess.DEVNULL, check=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vms", type=int, default=100)
    p.add_argument("--interval", type=float, default=0.1, help="seconds between two creations")
    p.add_argument("--node", default=None, help="pin every VMI to this node (default: wherever they fit)")
    p.add_argument("--timeout", type=float, default=600, help="give up on the rest after this many seconds")
    p.add_argument("--probe-every", type=float, default=0.1)
    p.add_argument("--prefix", default="lane", help="the VMIs' names: PREFIX-000, PREFIX-001, ...")
    p.add_argument("--server", default=default_url())
    p.add_argument("--creds", default=None)
    p.add_argument("--own-lab", action="store_true", help="bring up a 2-node lab for the run, and down after")
    p.add_argument("--state-dir", default=None,
                   help="the lab's state directory, whose launcher logs say what each launch cost in CPU "
                        f"(default: {DEFAULT_STATE_DIR} if there, or the own lab's)")
    p.add_argument("--cpu-allocation-ratio", type=int, default=None, metavar="N",
                   help="apply the KubeVirt CR with cpuAllocationRatio N for the run (the former one after)")
    args = p.parse_args()
    if args.vms < 1 or args.interval < 0:
        p.error("--vms must be at least 1 and --interval not negative")
    if args.cpu_allocation_ratio is not None and args.cpu_allocation_ratio < 1:
        p.error("--cpu-allocation-ratio must be at least 1")
    if args.own_lab:
        with own_lab(2) as (url, creds, state):
            args.state_dir = args.state_dir or str(state)
            code = asyncio.run(run(args, url, creds))
    else:
        if args.state_dir is None and Path(DEFAULT_STATE_DIR, "logs").is_dir():
            args.state_dir = DEFAULT_STATE_DIR
        code = asyncio.run(run(args, args.server, args.creds))
    sys.exit(code)


if __name__ == "__main__":
    entry.run(main, "lane.py")
