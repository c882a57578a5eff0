"""The hollow-node bench's own nats-server, or a cluster of them, BENCHMARK TOOLING: one user per
node as the lab's, monitoring ports for /connz, each server's log kept beside the run, and what
those logs say about dropped clients (slow consumers, stale connections, limits), summed for a
failure message.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from nats.js.api import ConsumerConfig, DeliverPolicy

from proto import subjects
from proto.state import Phase
from servicekit import credentials, listenport, natsserver

# what a server logs at [INF] about a client it dropped or struggles with (the wording of nats-server 2.9 to 2.15);
# every [WRN] and [ERR] line counts too
TROUBLE = ("Slow Consumer", "Stale Connection", "Maximum Connections", "Timeout", "Readloop")
READ_S = 30.0  # the longest wait for the next stored write while reading the vmis stream back


def free_port() -> int:
    return listenport.unused_port()  # outside the ephemeral range: no client takes it before the server


@dataclass
class Server:
    """One nats-server, or a cluster of them: ``url`` lists every client URL (clients pick one)."""

    url: str
    monitors: list[str]
    creds: Path
    procs: list[subprocess.Popen[bytes]]
    logs: list[Path]
    profs: list[str]  # each server's Go profiler: <prof>/debug/pprof/profile?seconds=15 for its CPU profile
    # each log's size once all were up: a cluster's routes refused while its servers start are no trouble
    ready_at: list[int]

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
    profs = [free_port() for _ in range(size)]
    routes = [f"nats://127.0.0.1:{route}" for _, _, route in ports]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i, (port, mport, route) in enumerate(ports):
            cluster = {"name": "hollow", "host": "127.0.0.1", "port": route, "routes": routes} if size > 1 else None
            config = json.loads(credentials.server_config(users, keys, host="127.0.0.1", port=port,
                                                          store_dir=str(directory / f"js{i}"),
                                                          server_name=f"hollow{i}", cluster=cluster))
            config["http_port"] = mport
            config["prof_port"] = profs[i]
            config["max_connections"] = 65536
            conf = directory / f"nats{i}.conf"
            credentials.write_server_config(conf, json.dumps(config))
            with (directory / f"nats{i}.log").open("wb") as out:
                procs.append(subprocess.Popen([natsserver.executable(), "-c", str(conf)], stdout=out,
                                              stderr=subprocess.STDOUT))
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
        yield Server(",".join(f"nats://127.0.0.1:{port}" for port, _, _ in ports), monitors, directory / "creds",
                     procs, [directory / f"nats{i}.log" for i in range(size)],
                     [f"http://127.0.0.1:{prof}" for prof in profs],
                     [(directory / f"nats{i}.log").stat().st_size for i in range(size)])
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)


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


def normalised(line: str) -> str:
    """A log line without its time, addresses, client names and numbers: lines of one kind alike."""
    line = re.sub(r"^\[\d+\] \S+ \S+ ", "", line)
    line = re.sub(r'"[^"]*"', '"…"', line)
    line = re.sub(r"\d+\.\d+\.\d+\.\d+:\d+", "ADDR", line)
    return re.sub(r"\d+(\.\d+)?", "N", line).strip()


def trouble(logs: list[Path], since: list[int] | None = None, limit: int = 8) -> str:
    """What the servers' logs say about clients they dropped, kind by kind with counts, from
    ``since`` (bytes into each log) on (pure but for reading the files)."""
    kinds: Counter[str] = Counter()
    for i, log in enumerate(logs):
        with contextlib.suppress(OSError):
            start = since[i] if since is not None else 0
            for line in log.read_bytes()[start:].decode(errors="replace").splitlines():
                if "[WRN]" in line or "[ERR]" in line or any(t in line for t in TROUBLE):
                    kinds[normalised(line)] += 1
    if not kinds:
        return "nats-server logged no warnings, errors or dropped clients"
    return "nats-server logged:\n" + "\n".join(f"  {n} x {kind}" for kind, n in kinds.most_common(limit))


def dead(server: Server) -> str | None:
    """Which server exited, if one did."""
    for i, proc in enumerate(server.procs):
        if proc.poll() is not None:
            return f"nats-server {i} exited with {proc.returncode}"
    return None


def bind_in(value: dict[str, Any]) -> str | None:
    """The VMI a ``vmis`` write binds (a VMI Scheduled on a node), if it is one (pure)."""
    if value.get("phase") == Phase.SCHEDULED.value and value.get("nodeName"):
        return str(value.get("name"))
    return None


def copied_bind_in(value: dict[str, Any]) -> str | None:
    """The VMI a node's copy (proto.nodevmis) brings its node as bound there, if it is one (pure)."""
    return bind_in(value.get("vmi") or {})


async def last_stored(nc: Client, bucket: str, first_seq: int, found: Callable[[dict[str, Any]], str | None],
                      seen: dict[str, float]) -> None:
    """Notes in ``seen`` the server's storage time (epoch seconds) of each VMI's first write in the
    bucket's stream after ``first_seq`` that ``found`` names."""
    js = nc.jetstream()
    stream = subjects.kv_stream(bucket)
    last_seq = (await js.stream_info(stream)).state.last_seq
    if last_seq <= first_seq:
        return
    since = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=first_seq + 1)
    sub = await js.subscribe(subjects.kv_subject(bucket, ">"), ordered_consumer=True, config=since)
    try:
        while True:
            msg = await sub.next_msg(timeout=READ_S)
            meta = msg.metadata
            name = found(json.loads(msg.data)) if msg.data else None
            if name is not None and name not in seen:
                seen[name] = meta.timestamp.timestamp()
            if meta.sequence.stream >= last_seq:
                break
    finally:
        await sub.unsubscribe()


async def last_bind_stored(nc: Client, first_seq: int, binds: int) -> float | None:
    """When the control plane had bound all of a burst's ``binds`` VMIs (epoch seconds): the server's
    storage time of the last bind among the ``vmis`` bucket's writes after ``first_seq`` (a write of
    a VMI Scheduled on a node). None when fewer binds than that were written."""
    seen: dict[str, float] = {}
    await last_stored(nc, subjects.BUCKET_VMIS, first_seq, bind_in, seen)
    return max(seen.values()) if len(seen) >= binds else None


async def last_copy_stored(nc: Client, first_seqs: dict[str, int], binds: int) -> float | None:
    """When the control plane had copied all of a burst's ``binds`` VMIs, bound, to their nodes'
    shards (epoch seconds; the nodes hear each copy as its shard republishes it): the storage time of
    the last of them among the shards' writes after ``first_seqs`` (by stream). None when fewer."""
    seen: dict[str, float] = {}
    for bucket in subjects.NODE_VMI_BUCKETS:
        await last_stored(nc, bucket, first_seqs.get(subjects.kv_stream(bucket), 0), copied_bind_in, seen)
    return max(seen.values()) if len(seen) >= binds else None
