"""``virtbus vmexport download NAME --vm VM|--pvc PVC|--snapshot SNAP --output FILE``: a volume's bytes
on this host, as ``virtctl vmexport download`` gives them: the raw disk gzipped (the default),
``--format raw``, or virtbus's own ``--format qcow2`` (the snapshot as stored; no qemu-img needed here).

virtbus runs no export server: an export is a point-in-time snapshot (a VM's volumes all at once, as
``vm snapshot`` takes them, whether the guest runs or not; a PVC's alone), named NAME, which this
command reads from the snapshot object store over the bus (admin credentials), checks against the
digest recorded for it, and converts here with qemu-img. Like virtctl's download, it deletes what it
made unless ``--keep-vme``; a ``--snapshot`` source is the user's and stays. The file is written under
a temporary name beside FILE and renamed into place whole.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

from ctl.client import ApiClient
from ctl.imagecmd import progress_line
from ctl.snapshotcmd import wait_snapshot
from ctl.stdout import say
from proto import subjects
from proto.api import Ack, NameRequest, VMReply
from proto.errors import ApiError, Code
from proto.snapshotapi import SnapshotCreate, SnapshotReply, VMSnapshotCreate, VMSnapshotView
from proto.snapshots import VolumeSnapshot
from proto.spec import claims
from servicekit import volumedata

FORMATS = ("gzip", "raw", "qcow2")
GZIP_LEVEL = 1  # a disk is mostly zeros and repeats: level 1 takes most of what 6 would, several times faster
COPY_CHUNK = 1 << 20


def add_parser(sub: Any) -> None:
    p = sub.add_parser("vmexport", help="download a VM's or a PVC's volume to a file (virtctl vmexport download)")
    p.add_argument("verb", choices=["download", "create", "delete"],
                   help="download (create and delete: virtbus makes an export for its download only)")
    p.add_argument("name", help="the export's name (its snapshot's, with --keep-vme)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--vm", default=None, help="a VM: all its volumes snapshotted at once, running or not")
    source.add_argument("--pvc", default=None, help="a PersistentVolumeClaim (a virtbus volume)")
    source.add_argument("--snapshot", default=None, help="a VirtualMachineSnapshot taken before (kept)")
    source.add_argument("--vmtemplate", default=None, help=argparse.SUPPRESS)
    p.add_argument("--volume", default=None, help="which volume (needed when the source has more than one)")
    p.add_argument("--output", default=None, help="the file to write")
    p.add_argument("--format", default="gzip", choices=FORMATS,
                   help="gzip (the raw disk, gzipped; default), raw, or qcow2 (as stored)")
    keep = p.add_mutually_exclusive_group()
    keep.add_argument("--keep-vme", action="store_true", help="keep the snapshot made for it (named NAME)")
    keep.add_argument("--delete-vme", action="store_true", help="delete it afterwards (the default)")
    p.add_argument("--manifest", action="store_true", help=argparse.SUPPRESS)
    for ignored in ("--insecure", "--port-forward"):  # virtctl's HTTP options: the bus needs neither
        p.add_argument(ignored, action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for the snapshot (default 1800)")


def check(args: argparse.Namespace) -> None:
    """What the command line asks, refused before anything is made."""
    if args.verb != "download":
        raise ApiError(Code.BAD_REQUEST, f"vmexport {args.verb}: virtbus makes an export for its download only: "
                       "vmexport download NAME --vm VM --output FILE (--keep-vme keeps its snapshot)", "verb")
    if args.manifest:
        raise ApiError(Code.BAD_REQUEST, "--manifest: virtbus has no export server for a manifest to point at; "
                       "get vm NAME -o yaml gives the VM", "manifest")
    if args.vmtemplate is not None:
        raise ApiError(Code.INVALID, "virtbus has no VirtualMachineTemplates", "vmtemplate")
    if not (args.vm or args.pvc or args.snapshot):
        raise ApiError(Code.BAD_REQUEST, "vmexport download needs its source: --vm, --pvc or --snapshot", "vm")
    if not args.output:
        raise ApiError(Code.BAD_REQUEST, "vmexport download needs --output FILE", "output")
    parent = Path(args.output).expanduser().absolute().parent
    if not parent.is_dir():
        raise ApiError(Code.BAD_REQUEST, f"--output: {parent} is not a directory", "output")
    if Path(args.output).is_dir():
        raise ApiError(Code.BAD_REQUEST, f"--output: {args.output} is a directory", "output")


def chosen(volumes: Collection[str], volume: str | None, source: str) -> str:
    """Pure: the volume asked for, or the only one."""
    if volume is not None:
        if volume not in volumes:
            have = ", ".join(sorted(volumes)) or "none"
            raise ApiError(Code.NOT_FOUND, f"{source} has no volume {volume} (it has: {have})", "volume")
        return volume
    if len(volumes) != 1:
        raise ApiError(Code.BAD_REQUEST, f"{source} has {len(volumes)} volumes ({', '.join(sorted(volumes))}): "
                       "choose one with --volume", "volume")
    return next(iter(volumes))


def _parts(view: VMSnapshotView) -> dict[str, VolumeSnapshot]:
    by_name = {p.name: p for p in view.parts}
    return {volume: by_name[snap] for volume, snap in view.item.volumes.items() if snap in by_name}


async def _snapshot(api: ApiClient, args: argparse.Namespace) -> tuple[VolumeSnapshot, list[tuple[str, str]]]:
    """The volume snapshot to read, Ready; and what to delete afterwards ((kind, name) for the API)."""
    if args.snapshot:  # a VM snapshot, as virtctl's --snapshot; or one volume's (virtbus volume snapshot)
        try:
            view = await api.call("vmsnapshot", "get", NameRequest(name=args.snapshot), VMSnapshotView)
        except ApiError as exc:
            if exc.code is not Code.NOT_FOUND:
                raise
            part = (await api.call("snapshot", "get", NameRequest(name=args.snapshot), SnapshotReply)).item
            chosen([part.volume], args.volume, f"snapshot/{args.snapshot}")
        else:
            parts = _parts(view)
            part = parts[chosen(parts, args.volume, f"vmsnapshot/{args.snapshot}")]
        await wait_snapshot(api, part.name, args.timeout)
        return (await api.call("snapshot", "get", NameRequest(name=part.name), SnapshotReply)).item, []
    if args.pvc:
        chosen([args.pvc], args.volume, f"--pvc {args.pvc}")
        made = (await api.call("snapshot", "create", SnapshotCreate(volume=args.pvc, name=args.name),
                               SnapshotReply)).item
        say(f"snapshot/{made.name} of volume/{args.pvc} asked; node {made.node} copies it")
        mine = [("snapshot", made.name)]
    else:  # the volume chosen before anything is made: a refusal leaves nothing to clean up
        vm = (await api.call("vm", "get", NameRequest(name=args.vm), VMReply)).item.vm
        volume = chosen({c for _, c in claims(vm.spec.volumes)}, args.volume, f"vm/{args.vm}")
        view = await api.call("vmsnapshot", "create", VMSnapshotCreate(vm=args.vm, name=args.name), VMSnapshotView)
        say(f"vmsnapshot/{view.item.name} of vm/{args.vm} asked: volumes {', '.join(sorted(view.item.volumes))}")
        mine = [("vmsnapshot", view.item.name)]
        made = _parts(view)[volume]
    try:
        await wait_snapshot(api, made.name, args.timeout)
        return (await api.call("snapshot", "get", NameRequest(name=made.name), SnapshotReply)).item, mine
    except BaseException:
        if not args.keep_vme:
            await _delete(api, mine)
        raise


async def _delete(api: ApiClient, made: list[tuple[str, str]]) -> None:
    for kind, name in made:
        say((await api.call(kind, "delete", NameRequest(name=name), Ack)).message)


async def _download(api: ApiClient, snap: VolumeSnapshot, dest: Path) -> None:
    store = await api.nc.jetstream().object_store(subjects.OBJECT_STORE_SNAPSHOTS)
    start = time.monotonic()

    async def report(done: int, total: int) -> None:
        print(progress_line(done, total, time.monotonic() - start), file=sys.stderr, flush=True)

    await volumedata.download(store, snap.uid, dest, snap.digest, report)
    print(progress_line(snap.size, snap.size, time.monotonic() - start), file=sys.stderr, flush=True)


async def _qemu_img(*args: str) -> None:
    if shutil.which("qemu-img") is None:
        raise ApiError(Code.UNAVAILABLE, "qemu-img is not on this host; --format qcow2 writes the snapshot as "
                       "stored", "format")
    proc = await asyncio.create_subprocess_exec("qemu-img", *args, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise ApiError(Code.INTERNAL, f"qemu-img {args[0]}: {err.decode(errors='replace').strip()[-300:]}")


def _gzip(raw: Path, dest: Path) -> None:
    with open(raw, "rb") as src, gzip.open(dest, "wb", compresslevel=GZIP_LEVEL) as out:
        while chunk := src.read(COPY_CHUNK):
            out.write(chunk)


async def write(snapshot_file: Path, fmt: str, output: Path) -> None:
    """The snapshot's qcow2 as output in fmt, renamed into place only once whole."""
    tmp = output.with_name(f".{output.name}.part")
    try:
        if fmt == "qcow2":
            os.replace(snapshot_file, tmp)
        else:
            raw = snapshot_file.with_suffix(".raw")
            await _qemu_img("convert", "-f", "qcow2", "-O", "raw", str(snapshot_file), str(raw))
            if fmt == "raw":
                os.replace(raw, tmp)
            else:
                await asyncio.to_thread(_gzip, raw, tmp)
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)


async def run(api: ApiClient, args: argparse.Namespace) -> int:
    check(args)
    output = Path(args.output).expanduser().absolute()
    snap, made = await _snapshot(api, args)
    try:
        with tempfile.TemporaryDirectory(prefix=f".{output.name}.", dir=output.parent) as work:
            qcow2 = Path(work, "snapshot.qcow2")
            say(f"downloading volume {snap.volume} ({snap.volume_size}; {snap.size} bytes stored) from "
                f"snapshot/{snap.name}")
            await _download(api, snap, qcow2)
            await write(qcow2, args.format, output)
    finally:
        if made and args.keep_vme:
            kind, name = made[0]
            say(f"kept {kind}/{name}; delete it with: virtbus "
                f"{'vm snapshot' if kind == 'vmsnapshot' else 'volume snapshot'} delete {name}")
        elif made:
            await _delete(api, made)
    say(f"{output}: volume {snap.volume} as {args.format} ({output.stat().st_size} bytes)")
    return 0
