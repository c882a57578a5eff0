"""Time to make a volume from an image, to snapshot it into the object store, and to restore it on
another node: each from the request until its record says Ready (the nodes' handlers move the bytes).

Needs a lab with the image imported (scripts/lab.sh makes one). Usage:
    .venv/bin/python bench/volume_snapshots.py [--size 1Gi] [--image IMAGE] [--from-node node1] \
        [--to-node node2] [--fill-mib 0 --state-dir /var/lib/virtbus/lab]
--fill-mib N writes N MiB into the volume (qemu-io, on its file under --state-dir) before the snapshot,
as a guest would have: an image-made volume is mostly empty, and so is its snapshot.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import entry  # noqa: E402 - bench/entry.py, beside this script

from ctl.client import ApiClient, default_url  # noqa: E402
from proto.api import Ack, NameRequest, VolumeCreate, VolumeReply  # noqa: E402
from proto.snapshotapi import SnapshotCreate, SnapshotReply, VolumeRestore  # noqa: E402
from proto.snapshots import SnapshotPhase  # noqa: E402
from proto.state import VolumePhase  # noqa: E402
from servicekit.paths import volume_path  # noqa: E402

IMAGE = "quay.io/kubevirt/cirros-container-disk-demo"


async def volume_ready(api: ApiClient, name: str, limit: float = 1800) -> float:
    start = time.monotonic()
    while True:
        v = (await api.call("volume", "get", NameRequest(name=name), VolumeReply)).item
        if v.phase is VolumePhase.READY:
            return time.monotonic() - start
        if v.phase is VolumePhase.FAILED or time.monotonic() - start > limit:
            raise RuntimeError(f"volume {name}: {v.phase.value} {v.reason}")
        await asyncio.sleep(0.05)


async def snapshot_ready(api: ApiClient, name: str, limit: float = 1800) -> tuple[float, int]:
    start = time.monotonic()
    while True:
        s = (await api.call("snapshot", "get", NameRequest(name=name), SnapshotReply)).item
        if s.phase is SnapshotPhase.READY:
            return time.monotonic() - start, s.size
        if s.phase is SnapshotPhase.FAILED or time.monotonic() - start > limit:
            raise RuntimeError(f"snapshot {name}: {s.phase.value} {s.reason}")
        await asyncio.sleep(0.05)


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--server", default=default_url())
    p.add_argument("--size", default="1Gi")
    p.add_argument("--image", default=IMAGE)
    p.add_argument("--from-node", default="node1")
    p.add_argument("--to-node", default="node2")
    p.add_argument("--fill-mib", type=int, default=0)
    p.add_argument("--state-dir", default="/var/lib/virtbus/lab")
    args = p.parse_args()
    api = await ApiClient.connect(args.server)
    names = ("bench-vol", "bench-snap", "bench-restored")
    try:
        t0 = time.monotonic()
        await api.call("volume", "create", VolumeCreate(name=names[0], size=args.size, image=args.image,
                                                        node=args.from_node), VolumeReply)
        await volume_ready(api, names[0])
        made = time.monotonic() - t0
        if args.fill_mib:
            record = (await api.call("volume", "get", NameRequest(name=names[0]), VolumeReply)).item
            path = volume_path(Path(args.state_dir) / "nodes" / args.from_node / "volumes", record)
            await asyncio.to_thread(subprocess.run, ["qemu-io", "-f", "qcow2", "-c",
                                                     f"write -P 0x5a 16M {args.fill_mib}M", str(path)],
                                    check=True, capture_output=True)
        t1 = time.monotonic()
        await api.call("snapshot", "create", SnapshotCreate(volume=names[0], name=names[1]), SnapshotReply)
        _, size = await snapshot_ready(api, names[1])
        snapped = time.monotonic() - t1
        t2 = time.monotonic()
        await api.call("volume", "restore", VolumeRestore(snapshot=names[1], name=names[2], node=args.to_node),
                       VolumeReply)
        await volume_ready(api, names[2])
        restored = time.monotonic() - t2
        print(f"volume {args.size} from image {args.image} on {args.from_node}: create->Ready {made:.1f}s; "
              f"snapshot->Ready {snapped:.1f}s ({size / 2**20:.1f} MiB in the store, {args.fill_mib} MiB written); "
              f"restore on {args.to_node}->Ready {restored:.1f}s")
    finally:
        for kind, name in (("volume", names[2]), ("snapshot", names[1]), ("volume", names[0])):
            try:
                await api.call(kind, "delete", NameRequest(name=name), Ack)
            except Exception as exc:  # noqa: BLE001 - what was never made is not there to delete
                print(f"cleanup: {kind} {name}: {exc}", file=sys.stderr)
        await api.close()


if __name__ == "__main__":
    entry.run(lambda: asyncio.run(main()), "volume_snapshots.py")
