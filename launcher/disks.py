"""Disks of one VMI: containerDisk (a qcow2 overlay on the node's cached copy of the image; on a
cdrom, that copy itself, read-only), emptyDisk (a fresh sparse qcow2), cloudInitNoCloud (a NoCloud
"cidata" ISO), cloudInitConfigDrive (launcher.configdrive), ephemeral (a qcow2 overlay on a volume,
which is never written), hostDisk (launcher.hostdisks) and volumes.

All but volumes and hostDisks are KubeVirt's ephemeral kinds: they live in the VMI's directory and go
with it (a cdrom's image excepted, which is the node's cache's). A hostDisk is the operator's file.
A volume (persistentVolumeClaim, dataVolume) is a file of the node's ``volumes`` directory that
outlives every run: made by the first launcher that uses it, blank or a full copy of its image
(never backed by the image cache, which is cleaned), and removed by the node once it is deleted.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import os
import subprocess
from pathlib import Path

import nats.js.errors
import structlog
from nats.js.object_store import ObjectStore

from launcher import configdrive, hostdisks
from launcher.overlay import OverlayError, write_overlay
from proto import imagefacts
from proto.errors import ApiError, Code
from proto.quantity import format_bytes, parse_bytes
from proto.spec import (
    CloudInitConfigDrive,
    CloudInitNoCloud,
    ContainerDisk,
    EmptyDisk,
    Ephemeral,
    HostDisk,
    PersistentVolumeClaim,
    VMSpec,
)
from proto.state import PersistentVolume
from proto.validation import empty_disk_total
from servicekit import imagefile
from servicekit.paths import path_under, safe_name, volume_path

log = structlog.get_logger()
FORMAT_XATTR = "user.virtbus.format"  # the verdict on a cached image, kept on it (image_format)
KEPT_FORMATS = ("raw", "qcow2")
DiskPaths = dict[str, tuple[str, str]]  # volume name -> (path, format)


async def prepare(spec: VMSpec, *, uid: str, vmi_dir: Path, cache_dir: Path, images: ObjectStore,
                  volumes: dict[str, PersistentVolume] | None = None, volumes_dir: Path | None = None,
                  host_disk_dirs: tuple[Path, ...] = ()) -> DiskPaths:
    """volumes: the records of the volumes the VM uses, by name; volumes_dir: the node's volume files;
    host_disk_dirs: where hostDisks may be (none: every hostDisk is refused)."""
    # The scheduler placed the VM where its emptyDisks fit; the disk may have filled since (or two
    # binds raced on one snapshot): a guest that would pause on ENOSPC is better not started.
    st = await asyncio.to_thread(os.statvfs, vmi_dir)
    check_disk_room(spec, st.f_bavail * st.f_frsize)
    out: DiskPaths = {}
    cdroms = {disk.name for disk in spec.disks if disk.device == "cdrom"}
    for index, volume in enumerate(spec.volumes):
        source = volume.source
        if isinstance(source, ContainerDisk):
            base = await cached_image(images, source.image, cache_dir)
            fmt = await asyncio.to_thread(image_format, base)
            if volume.name in cdroms:  # an installer ISO: read-only media needs no overlay
                out[volume.name] = (str(base), fmt)
                continue
            overlay = path_under(vmi_dir, volume.name, ".qcow2", what="volume name")
            await make_overlay(overlay, base, fmt)
            out[volume.name] = (str(overlay), "qcow2")
        elif isinstance(source, EmptyDisk):
            path = path_under(vmi_dir, volume.name, ".qcow2", what="volume name")
            await _run("qemu-img", "create", "-q", "-f", "qcow2", str(path), str(parse_bytes(source.capacity)))
            out[volume.name] = (str(path), "qcow2")
        elif isinstance(source, PersistentVolumeClaim | Ephemeral):
            record = (volumes or {}).get(source.claim_name)
            if record is None or volumes_dir is None:
                raise ApiError(Code.NOT_FOUND, f"volume {source.claim_name!r} not found")
            path = volume_path(volumes_dir, record)
            if not path.exists():  # its first user makes it, an ephemeral one too
                await make_volume(record, path, images=images, cache_dir=cache_dir)
            elif isinstance(source, PersistentVolumeClaim):  # growing is writing: not for an ephemeral use
                await grow_volume(record, path)
            if isinstance(source, Ephemeral):
                # QEMU opens a backing file read-only, and its image locks refuse one another process writes
                overlay = path_under(vmi_dir, volume.name, ".qcow2", what="volume name")
                await make_overlay(overlay, path, "qcow2")
                path = overlay
            out[volume.name] = (str(path), "qcow2")
        elif isinstance(source, HostDisk):
            out[volume.name] = (str(await asyncio.to_thread(hostdisks.prepare, source, index, host_disk_dirs)), "raw")
        elif isinstance(source, CloudInitConfigDrive):
            out[volume.name] = (str(await asyncio.to_thread(
                configdrive.make_config_drive, source, uid=uid, hostname=spec.guest_hostname, vmi_dir=vmi_dir)), "raw")
        elif isinstance(source, CloudInitNoCloud):
            out[volume.name] = (str(await asyncio.to_thread(
                make_cidata, source, uid=uid, hostname=spec.guest_hostname, vmi_dir=vmi_dir)), "raw")
    return out


async def make_volume(volume: PersistentVolume, path: Path, *, images: ObjectStore, cache_dir: Path) -> None:
    """The volume's file, blank or with its image's content, made under a temporary name so a
    launcher killed meanwhile leaves nothing that passes for the volume."""
    path.parent.mkdir(parents=True, exist_ok=True)
    size = parse_bytes(volume.size)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        if volume.image is None:
            await _run("qemu-img", "create", "-q", "-f", "qcow2", str(tmp), str(size))
        else:
            base = await cached_image(images, volume.image, cache_dir)
            virtual = await asyncio.to_thread(image_virtual_size, base)
            if virtual > size:
                raise ApiError(Code.INVALID, f"image {volume.image} holds {format_bytes(virtual)}, more than volume "
                               f"{volume.name}'s {format_bytes(size)}")
            fmt = await asyncio.to_thread(image_format, base)
            await _run("qemu-img", "convert", "-q", "-f", fmt, "-O", "qcow2", str(base), str(tmp))
            if virtual < size:
                await _run("qemu-img", "resize", "-q", "-f", "qcow2", str(tmp), str(size))
        tmp.rename(path)
    finally:
        tmp.unlink(missing_ok=True)


async def grow_volume(volume: PersistentVolume, path: Path) -> bool:
    """A volume resized since its file was made grows to its size before the guest starts (the
    guest sees it at its next start, as KubeVirt's guests do without online expansion); a volume
    never shrinks. True if it grew."""
    now, wanted = await asyncio.to_thread(image_virtual_size, path), parse_bytes(volume.size)
    if wanted <= now:
        return False
    await _run("qemu-img", "resize", "-q", "-f", "qcow2", str(path), str(wanted))
    return True


def image_virtual_size(path: Path) -> int:
    done = subprocess.run(["qemu-img", "info", "--output=json", str(path)], capture_output=True, text=True,
                          check=True)
    return int(json.loads(done.stdout)["virtual-size"])


def check_disk_room(spec: VMSpec, free: int) -> None:
    """Pure: refuse emptyDisks that could not all fill up in ``free`` bytes."""
    wanted = empty_disk_total(spec)
    if wanted > free:
        raise ApiError(Code.INVALID, f"the emptyDisks need {format_bytes(wanted)}; the node has {format_bytes(free)} "
                       "free", "spec.volumes")


async def cached_image(images: ObjectStore, name: str, cache_dir: Path) -> Path:
    """The node's copy of an image, fetched once per content digest; safe against a concurrent fetch."""
    try:
        info = await images.get_info(name)
    except nats.js.errors.NotFoundError:
        raise ApiError(Code.NOT_FOUND, f"image {name!r} is not in the image store; "
                       f"upload it with: virtbus image upload {name} --file DISK") from None
    path = image_path(cache_dir, info.digest)
    try:
        os.utime(path)  # its last use, for the cache's cleaner (least recently used goes first)
        return path
    except FileNotFoundError:
        pass  # not fetched yet, or just cleaned away: fetch it
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        with open(tmp, "wb") as f:
            await images.get(name, writeinto=f)  # verifies the digest as it goes
        # what its uploader recorded must be what the node finds, or the copy never enters the cache
        fmt = await asyncio.to_thread(imagefile.usable_format, tmp, imagefacts.recorded(info.headers)[0])
        keep_format(tmp, fmt)
        tmp.rename(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def image_path(cache_dir: Path, digest: str | None) -> Path:
    """Pure: where the node keeps the image of this content digest (``SHA-256=<base64url>``, as nats
    object stores write it), as ``<2 hex>/<62 hex>.img`` like git's objects, so each part is a safe name.

    Without a digest there is no name: an object's metadata is anyone's writing, and a made-up nuid
    must never pick a file of the cache (or elsewhere) to back a guest."""
    algorithm, _, encoded = (digest or "").partition("=")
    if algorithm.upper() != "SHA-256":
        raise ApiError(Code.INVALID, f"the image has no SHA-256 digest ({digest!r}); import it again")
    try:
        raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (ValueError, binascii.Error):
        raw = b""
    if len(raw) != 32:
        raise ApiError(Code.INVALID, f"the image's digest {digest!r} is not a SHA-256 digest")
    key = raw.hex()
    return path_under(path_under(cache_dir, key[:2]), key[2:], ".img")


def image_format(path: Path) -> str:
    """What QEMU is told the cached image is, ``raw`` (an ISO too) or ``qcow2``: read off the file
    itself, never off the object's metadata; a qcow2 naming another file is refused.

    The node reads it once, as it fetches the image, and keeps the verdict on the file (an extended
    attribute, ``keep_format``): the copy is named by its content's digest, verified as it was
    fetched, and never written again, so the verdict holds for as long as the file does. A copy
    without one (fetched by an older launcher, or on a file system without user attributes) is
    read again with qemu-img (3.7 ms of CPU a run on an idle box, more under load)."""
    try:
        kept = os.getxattr(path, FORMAT_XATTR).decode(errors="replace")
    except OSError:
        kept = ""
    if kept in KEPT_FORMATS:
        return kept
    fmt = imagefile.usable_format(path, None)
    keep_format(path, fmt)
    return fmt


def keep_format(path: Path, fmt: str) -> None:
    """Best effort: a file system without user attributes only costs the next launch a qemu-img run."""
    with contextlib.suppress(OSError):
        os.setxattr(path, FORMAT_XATTR, fmt.encode())


async def make_overlay(overlay: Path, base: Path, fmt: str) -> None:
    """A fresh, empty qcow2 over the cached image or volume (one left by an earlier run of this launcher is
    replaced, as qemu-img create did): written directly (launcher.overlay), or by qemu-img where
    the image's shape is not the one written here."""
    overlay.unlink(missing_ok=True)
    try:
        await asyncio.to_thread(write_overlay, overlay, base, fmt)
    except OverlayError as exc:
        log.info("overlay made by qemu-img", why=str(exc))
        await _run("qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", fmt, str(overlay))


def meta_data(*, uid: str, hostname: str) -> str:
    """Pure: cloud-init's meta-data. Both are safe names: a newline would add a line of YAML."""
    return f"instance-id: {safe_name(uid, 'uid')}\nlocal-hostname: {safe_name(hostname, 'hostname')}\n"


def make_cidata(source: CloudInitNoCloud, *, uid: str, hostname: str, vmi_dir: Path) -> Path:
    meta = meta_data(uid=uid, hostname=hostname)
    src = vmi_dir / "cidata"
    src.mkdir(parents=True, exist_ok=True)
    (src / "user-data").write_text(source.user_data)
    (src / "meta-data").write_text(meta)
    files = ["user-data", "meta-data"]
    if source.network_data:
        (src / "network-config").write_text(source.network_data)
        files.append("network-config")
    iso = vmi_dir / "cidata.iso"
    subprocess.run(["genisoimage", "-quiet", "-output", str(iso), "-volid", "cidata", "-joliet", "-rock",
                    *files], cwd=src, check=True, capture_output=True)
    return iso


async def _run(*cmd: str) -> None:
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {err.decode(errors='replace').strip()}")
