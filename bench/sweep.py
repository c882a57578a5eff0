"""The leader's sweep of deleted keys (servicekit.kvmarkers), printed: what one pass costs the leader
and nats-server, on a bucket as the store makes them, against a real nats-server of the bench's own.

A bucket of --keys keys (each written --revisions times, --value-bytes a value, as VMIs are),
--deleted of them deleted, then one sweep with a mark past every deletion, then one more with
nothing left to take (and where markers are kept, a new leader's first pass, which trims them all
again). Each pass prints its time, the CPU of this process (the leader's side: the
listing and the purges) and of nats-server, how many keys it took, and the bucket's bytes after.
The sweep takes deleted keys out whole on a nats-server from 2.10.11 on, and trims them to their
markers on older ones (Debian's 2.9: ``VIRTBUS_NATS_SERVER=/usr/sbin/nats-server``), as the leader
does; --mode picks one. Usage:
    .venv/bin/python bench/sweep.py [--keys 10000] [--deleted 1000] [--revisions 3] [--value-bytes 1500]
                                    [--mode auto|whole|trim]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import entry  # noqa: E402 - bench/entry.py, beside this script
from hollow_nats import nats_server  # noqa: E402 - bench/hollow_nats.py, beside this script
from nats.js.api import KeyValueConfig, StorageType  # noqa: E402
from nats.js.kv import KeyValue  # noqa: E402
from procstat import TICKS, cpu_ticks  # noqa: E402 - bench/procstat.py, beside this script

from proto import subjects  # noqa: E402
from servicekit import credentials, kvmarkers  # noqa: E402
from servicekit.store import Store  # noqa: E402

BUCKET = "sweepbench"
IN_FLIGHT = 256  # the bench's own writes at a time


async def fill(kv: KeyValue, keys: int, deleted: int, revisions: int, value: bytes) -> None:
    async def life(i: int) -> None:
        for _ in range(revisions):
            await kv.put(f"vm{i}", value)
        if i < deleted:
            await kv.delete(f"vm{i}")

    for start in range(0, keys, IN_FLIGHT):
        await asyncio.gather(*(life(i) for i in range(start, min(keys, start + IN_FLIGHT))))


async def one_pass(store: Store, kv: KeyValue, server_pid: int, mark: int, whole: bool, what: str,
                   after: int = 0) -> int:
    cpu, server, t0 = time.process_time(), cpu_ticks(server_pid), time.monotonic()
    taken = await (kvmarkers.sweep(kv, mark) if whole else kvmarkers.trim(kv, mark, after))
    elapsed, cpu = time.monotonic() - t0, time.process_time() - cpu
    server_s = (cpu_ticks(server_pid) - server) / TICKS
    left = (await store.js.stream_info(subjects.kv_stream(BUCKET))).state
    print(f"{what}: {'took out' if whole else 'trimmed'} {taken} keys in {elapsed:.2f} s; CPU: this process "
          f"(the leader's side) {cpu:.2f} s, nats-server {server_s:.2f} s; bucket after: "
          f"{left.bytes / 2**20:.1f} MiB, {left.messages} messages", flush=True)
    return taken


async def main(args: argparse.Namespace) -> None:
    if not 0 <= args.deleted <= args.keys or args.revisions < 1 or args.value_bytes < 1:
        raise entry.BenchError("need 0 <= --deleted <= --keys, --revisions >= 1 and --value-bytes >= 1")
    with tempfile.TemporaryDirectory(prefix="virtbus-sweep-") as tmp, nats_server(Path(tmp), []) as server:
        seed = str(credentials.seed_path(server.creds, "control"))
        store = await Store.connect(server.url, "virtbus-bench-sweep", creds=seed,
                                    inbox=subjects.inbox_prefix("control"))  # as the leader connects
        try:
            whole = kvmarkers.server_purges_safely(store.nc) if args.mode == "auto" else args.mode == "whole"
            kv = await store.js.create_key_value(KeyValueConfig(
                bucket=BUCKET, history=5, storage=StorageType.FILE, max_bytes=1024 * 2**20))
            t0 = time.monotonic()
            await fill(kv, args.keys, args.deleted, args.revisions, b"x" * args.value_bytes)
            before = (await store.js.stream_info(subjects.kv_stream(BUCKET))).state
            print(f"nats-server {store.nc.connected_server_version}: {args.keys} keys of {args.revisions} "
                  f"revisions of {args.value_bytes} bytes, {args.deleted} of them deleted, written in "
                  f"{time.monotonic() - t0:.1f} s; bucket: {before.bytes / 2**20:.1f} MiB, "
                  f"{before.messages} messages", flush=True)
            mark = int(before.last_seq or 0)
            pid = server.procs[0].pid
            taken = await one_pass(store, kv, pid, mark, whole, "the sweep")
            again = await one_pass(store, kv, pid, mark, whole, "the next sweep, nothing new deleted", after=mark)
            if not whole:  # a new leader knows of no trim before its own: it trims every marker once more
                await one_pass(store, kv, pid, mark, whole, "a new leader's first sweep, nothing new deleted")
            if taken != args.deleted:
                raise entry.BenchError(f"the sweep took {taken} keys of the {args.deleted} deleted")
            if again:
                raise entry.BenchError(f"the next sweep took {again} keys more, with nothing deleted since")
        finally:
            await store.close()


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keys", type=int, default=10_000)
    p.add_argument("--deleted", type=int, default=1_000)
    p.add_argument("--revisions", type=int, default=3)
    p.add_argument("--value-bytes", type=int, default=1_500)
    p.add_argument("--mode", choices=("auto", "whole", "trim"), default="auto")
    return p.parse_args(argv)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    entry.run(lambda: asyncio.run(main(parse(sys.argv[1:]))), "sweep.py")
