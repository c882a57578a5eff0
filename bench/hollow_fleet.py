"""Hollow nodes spread over worker processes, BENCHMARK TOOLING: one Python event loop serving a few
hundred NATS connections falls behind (its reads stall, nats-server's writes to it block past the
write deadline and it drops them as slow consumers), so bench/hollow_nodes.py runs ``--procs``
workers of this module, each with a slice of the nodes, and watches what they report.

A worker prints one JSON line a second on stdout: how many of its nodes registered, how many are
connected, reconnects, keys heard, VMIs newly Running (with when), the invariants' counts and its
event loop's worst lag. The bench sums them (Fleet) and fails fast, saying why, when nodes stay
disconnected, a worker dies or nothing moves (Watchdog).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hollow import HollowNode, start_all
from procstat import TICKS, total_cpu_ticks

from proto import subjects
from servicekit import collector, cpugroup, logs
from servicekit.cancelling import cancel_and_wait

REPORT_S = 1.0
LAG_TICK_S = 0.1


class BenchFailed(Exception):
    """The run cannot give clean figures; the message says why, with counts."""


# --- the worker (a child process) -------------------------------------------------------------


@dataclass
class WorkerArgs:
    urls: list[str]
    creds: dict[str, str]  # node -> its seed file
    first: int  # index of its first node among all (for the round-robin over a cluster's servers)
    names: list[str]
    wave: int
    legacy: bool
    followed: str = "subscription"  # HollowNode's


# A report line carries the Running times its worker has not sent yet: a worker of 100 nodes with
# 10,000 VMIs (--nodes 100 --vmis 10000) sent ~250 KB in one line, past asyncio's 64 KiB default.
REPORT_LINE_LIMIT = 2**24


def status_of(nodes: list[HollowNode], started: set[str], sent: set[str], lag: float,
              failure: str | None) -> dict[str, object]:
    """One report line: counts, and the Running times not reported before (``sent`` grows)."""
    running: dict[str, float] = {}
    for n in nodes:
        for vm, at in n.seen.running_at.items():
            if vm not in sent:
                running[vm] = at
    sent.update(running)
    live = [n for n in nodes if n.name in started and n.store is not None]
    return {
        "registered": len(live),
        "connected": sum(1 for n in live if n.store is not None and n.store.nc.is_connected),
        "reconnects": sum(int(n.store.nc.stats["reconnects"]) for n in live if n.store is not None),
        "bound": sum(len(n.seen.keys) for n in nodes),
        "foreign": sum(len(n.seen.foreign) for n in nodes),
        "wrong": sum(1 for n in nodes for vm in n.seen.running_at
                     if subjects.node_vmi(n.name, vm) not in n.seen.keys),
        "lag": round(lag, 3),
        "running": running,
        "failure": failure,
    }


async def serve(args: WorkerArgs) -> None:
    nodes = [HollowNode(name, args.urls[(args.first + i) % len(args.urls)], args.creds[name], legacy=args.legacy,
                        followed=args.followed) for i, name in enumerate(args.names)]
    started: set[str] = set()
    sent: set[str] = set()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    parent = os.getppid()
    failure: list[str] = []
    worst = [0.0]

    async def register() -> None:
        async def one(node: HollowNode) -> None:
            await node.start()
            started.add(node.name)
        try:
            await start_all(nodes, args.wave, start=one)
        except Exception as exc:  # noqa: BLE001 - reported to the bench, which fails the run with it
            failure.append(f"registration: {type(exc).__name__}: {exc}")

    async def lagging() -> None:  # how late a short sleep wakes: the loop's backlog
        while True:
            t = time.monotonic()
            await asyncio.sleep(LAG_TICK_S)
            worst[0] = max(worst[0], time.monotonic() - t - LAG_TICK_S)

    registering = asyncio.create_task(register())
    measuring = asyncio.create_task(lagging())
    try:
        while not stop.is_set() and os.getppid() == parent:  # an orphan stops (the bench died)
            line = status_of(nodes, started, sent, worst[0], failure[0] if failure else None)
            worst[0] = 0.0
            sys.stdout.write(json.dumps(line) + "\n")
            sys.stdout.flush()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), REPORT_S)
    finally:
        await cancel_and_wait([registering, measuring])  # not a cancel and an await: one may be lost (3.11)
        await asyncio.gather(*(n.stop() for n in nodes), return_exceptions=True)


def worker_main(spec: str) -> None:
    logs.configure("hollow-worker")  # its logs on stderr: stdout carries only its reports
    collector.pace_for_caches()  # as the handler whose code paths it runs
    raw = json.loads(Path(spec).read_text())
    asyncio.run(serve(WorkerArgs(**raw)))


# --- the bench's side -------------------------------------------------------------------------


@dataclass
class Worker:
    proc: asyncio.subprocess.Process
    log: Path
    count: int
    last: dict[str, object] = field(default_factory=dict)
    running_at: dict[str, float] = field(default_factory=dict)
    exited: int | None = None


class Fleet:
    """The workers, and the sum of what they last said."""

    def __init__(self) -> None:
        self.workers: list[Worker] = []
        self.grouped = 0  # workers that joined the CPU group they were given
        self._readers: list[asyncio.Task[None]] = []

    async def start(self, directory: Path, urls: list[str], creds: Callable[[str], str], names: list[str],
                    procs: int, wave: int, legacy: bool, cpu_group: Path | None = None,
                    followed: str = "subscription") -> None:
        """cpu_group: a CPU group (servicekit.cpugroup) each worker joins as it starts."""
        procs = max(1, min(procs, len(names)))
        per = -(-len(names) // procs)
        for w in range(procs):
            first = w * per
            mine = names[first:first + per]
            if not mine:
                break
            spec = directory / f"hollow-worker{w}.json"
            spec.write_text(json.dumps({"urls": urls, "creds": {n: creds(n) for n in mine}, "first": first,
                                        "names": mine, "wave": wave, "legacy": legacy, "followed": followed}))
            log = directory / f"hollow-worker{w}.log"
            with log.open("wb") as err:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, str(Path(__file__).with_name("hollow_nodes.py")), "--worker", str(spec),
                    stdout=asyncio.subprocess.PIPE, stderr=err, stdin=asyncio.subprocess.DEVNULL,
                    limit=REPORT_LINE_LIMIT)
            if cpu_group is not None and cpugroup.join(cpu_group, proc.pid):
                self.grouped += 1
            worker = Worker(proc, log, len(mine))
            self.workers.append(worker)
            self._readers.append(asyncio.create_task(self._read(worker)))

    async def _read(self, worker: Worker) -> None:
        assert worker.proc.stdout is not None
        while line := await worker.proc.stdout.readline():
            with contextlib.suppress(ValueError):
                status = json.loads(line)
                running = status.pop("running", {})
                worker.running_at.update(running)
                worker.last = status
        worker.exited = await worker.proc.wait()

    def total(self, key: str) -> int:
        return sum(int(w.last.get(key, 0) or 0) for w in self.workers)  # type: ignore[call-overload]

    @property
    def nodes(self) -> int:
        return sum(w.count for w in self.workers)

    @property
    def running_at(self) -> dict[str, float]:
        return {vm: at for w in self.workers for vm, at in w.running_at.items()}

    def running(self) -> int:
        return sum(len(w.running_at) for w in self.workers)

    def lag(self) -> float:
        return max((float(w.last.get("lag", 0.0) or 0.0) for w in self.workers), default=0.0)  # type: ignore[arg-type]

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self.workers]

    def summary(self) -> str:
        return (f"{self.total('registered')} of {self.nodes} hollow nodes registered, {self.total('connected')} "
                f"connected, {self.total('reconnects')} reconnects, {self.total('bound')} VMIs bound as the nodes "
                f"heard, {self.running()} Running; worst event-loop lag of a worker in its last second "
                f"{self.lag():.1f} s")

    def check(self) -> None:
        """Raises BenchFailed when a worker died or gave up registering."""
        for i, w in enumerate(self.workers):
            if w.last.get("failure"):
                raise BenchFailed(f"hollow worker {i}: {w.last['failure']} ({self.summary()})")
            if w.exited is not None:
                tail = w.log.read_text(errors="replace")[-2000:]
                raise BenchFailed(f"hollow worker {i} exited with {w.exited} ({self.summary()}); its log ends:\n{tail}")

    async def stop(self) -> None:
        for w in self.workers:
            if w.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.terminate()
        for w in self.workers:
            try:
                await asyncio.wait_for(w.proc.wait(), 30)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.kill()
                await w.proc.wait()
        await cancel_and_wait(self._readers)


class Watchdog:
    """Fails the run (BenchFailed, with counts) rather than waiting out its timeout: nodes whose
    connection stays lost for ``lost_s``, or no count moving for ``stall_s``."""

    def __init__(self, fleet: Fleet, lost_s: float = 30.0, stall_s: float = 180.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.fleet = fleet
        self.lost_s = lost_s
        self.stall_s = stall_s
        self.clock = clock
        self._lost_since: float | None = None
        self._counts: tuple[int, ...] = ()
        self._moved_at = clock()

    def check(self, stage: str, *extra: int, moving: bool = True) -> None:
        """moving: counts are expected to move (False in a steady state: only connections count)."""
        self.fleet.check()
        now = self.clock()
        lost = self.fleet.total("registered") - self.fleet.total("connected")
        if lost <= 0:
            self._lost_since = None
        elif self._lost_since is None:
            self._lost_since = now
        elif now - self._lost_since > self.lost_s:
            raise BenchFailed(f"{stage}: {lost} hollow nodes disconnected from NATS for over {self.lost_s:.0f} s "
                              f"({self.fleet.summary()})")
        counts = (self.fleet.total("registered"), self.fleet.total("bound"), self.fleet.running(), *extra)
        if counts != self._counts or not moving:
            self._counts, self._moved_at = counts, now
        elif now - self._moved_at > self.stall_s:
            raise BenchFailed(f"{stage}: no progress for {self.stall_s:.0f} s ({self.fleet.summary()})")


class CpuMeter:
    """Percent of a core a group of processes used since the group's last reading (from /proc)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._last: dict[str, tuple[int, float]] = {}

    def read(self, label: str, pids: list[int]) -> float:
        ticks = total_cpu_ticks(pids)
        now = self.clock()
        before = self._last.get(label)
        self._last[label] = (ticks, now)
        if before is None or now <= before[1]:
            return 0.0
        return max(0.0, 100.0 * (ticks - before[0]) / TICKS / (now - before[1]))
