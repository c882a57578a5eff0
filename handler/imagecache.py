"""The node's image cache (``<node state>/images/<2 hex>/<62 hex>.img``, one file per content
digest, fetched by launchers) kept bounded and clean.

A pure planner picks what goes: first every entry whose image is gone from the store, then the
least recently used until the cache is under its bound; never an entry an instance here uses (the
backing file of an overlay in a VMI's directory, an image a VMI bound here names, or a file some
process here holds open), never one used in the last minute (a launcher between fetching it and
making its overlay), never a fetch in progress (``.part``; one untouched for ten minutes is a dead
launcher's and goes). The adapter sweeps every minute, and at once when an image is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import msgspec
import nats.js.errors
import structlog
from nats.aio.msg import Msg

from handler import nodevmis
from proto import imagefacts, subjects
from proto.imagefacts import qcow2_backing
from proto.spec import claims
from proto.state import FINAL_PHASES, VMI
from servicekit.informer import shared
from servicekit.store import Store

log = structlog.get_logger()
SWEEP_EVERY_S = 60.0
MIN_AGE_S = 60.0  # an entry used this recently may be about to back an overlay
STALE_PART_S = 600.0  # a fetch writes all the time: a .part this quiet has no launcher behind it
DEFAULT_BOUND = 20 << 30
_ENTRY = re.compile(r"^([0-9a-f]{62})\.img$")
_PART = re.compile(r"^\.([0-9a-f]{62})\.img\.[0-9]+\.part$")


class _Deleted(msgspec.Struct):
    """What an object's published metadata says of its going (nats-py's ObjectInfo, the rest ignored)."""

    deleted: bool = False


def _says_deleted(data: bytes) -> bool:
    try:
        return msgspec.json.decode(data, type=_Deleted).deleted
    except msgspec.DecodeError:  # not an object's info: nothing to act on (the sweeps go on)
        return False


class Why(enum.StrEnum):
    GONE = "its image is no longer in the store"
    LRU = "least recently used, the cache is over its bound"
    STALE_PART = "an abandoned fetch"


@dataclass(frozen=True)
class CacheFile:
    path: Path
    key: str  # the image's SHA-256, hex
    size: int  # bytes it takes on disk
    last_used: float  # its mtime: launchers touch an entry at each use
    partial: bool = False  # a fetch under way (or abandoned)


def plan(files: Iterable[CacheFile], *, in_store: set[str], in_use: set[str], bound: int,
         now: float) -> list[tuple[CacheFile, Why]]:
    """Pure: the files to remove, and why."""
    out: list[tuple[CacheFile, Why]] = []
    kept: list[CacheFile] = []
    for f in files:
        idle = now - f.last_used
        if f.partial:
            if idle > STALE_PART_S:
                out.append((f, Why.STALE_PART))
            else:
                kept.append(f)
        elif f.key not in in_use and idle >= MIN_AGE_S and f.key not in in_store:
            out.append((f, Why.GONE))
        else:
            kept.append(f)
    total = sum(f.size for f in kept)
    candidates = sorted((f for f in kept if not f.partial and f.key not in in_use and now - f.last_used >= MIN_AGE_S),
                        key=lambda f: (f.last_used, f.key))
    for f in candidates:
        if total <= bound:
            break
        out.append((f, Why.LRU))
        total -= f.size
    return out


def cache_key(cache_dir: Path, path: Path) -> str | None:
    """Pure: the digest of a cache entry's path (``<cache>/<2 hex>/<62 hex>.img``), None for any other path."""
    match = _ENTRY.fullmatch(path.name)
    shard = path.parent.name
    if match is None or path.parent.parent != cache_dir or len(shard) != 2 or not _is_hex(shard):
        return None
    return shard + match.group(1)


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


class ImageCache:
    def __init__(self, store: Store, node: str, state_dir: Path, bound: int = DEFAULT_BOUND,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.node = node
        self.dir = state_dir / "images"
        self.vmis_dir = state_dir / "vmis"
        self.bound = bound
        self.clock = clock
        self._wake = asyncio.Event()

    def kick(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        sweeping = asyncio.create_task(self._every())
        try:
            while True:
                try:
                    await self._watch_deletes()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the watch starts again; the sweeps go on
                    log.warning("image store watch ended; starting it again", error=str(exc) or type(exc).__name__)
                await asyncio.sleep(5.0)
        finally:
            sweeping.cancel()

    async def _watch_deletes(self) -> None:
        """An image's deletion, heard as its metadata is published (a plain subscription: a watch of the
        store was a consumer each node kept, with its heartbeats). One missed (the connection was down)
        waits for the next sweep, at most SWEEP_EVERY_S."""
        published: asyncio.Queue[bytes] = asyncio.Queue()

        async def deliver(msg: Msg) -> None:
            published.put_nowait(msg.data)

        sub = await self.store.nc.subscribe(subjects.object_metadata(subjects.OBJECT_STORE_IMAGES), cb=deliver)
        try:
            while True:
                if _says_deleted(await published.get()):
                    self.kick()
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _every(self) -> None:
        kicked = False
        while True:
            self._wake.clear()
            try:
                gone = await self.sweep()
                if kicked:  # an image was deleted: say what its node did about it
                    log.info("image deleted from the store; image cache swept", removed=len(gone))
            except Exception as exc:  # noqa: BLE001 - the next sweep tries again
                log.warning("image cache sweep failed", error=str(exc) or type(exc).__name__)
            kicked = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), SWEEP_EVERY_S)
                kicked = True

    async def sweep(self) -> list[tuple[CacheFile, Why]]:
        files = await asyncio.to_thread(self._files)
        if not files:
            return []
        # Read before anything is judged: a store that cannot be listed means no sweep, never "all gone".
        digests = await self._digests()
        in_store = {key for key in digests.values() if key is not None}
        in_use = (await asyncio.to_thread(self._backing_keys) | await asyncio.to_thread(self._open_keys)
                  | await self._named_keys(digests))
        gone = plan(files, in_store=in_store, in_use=in_use, bound=self.bound, now=self.clock())
        removed = []
        for f, why in gone:
            if not await asyncio.to_thread(_unlink_unless_used, f):
                continue  # a launcher used it since it was listed: it stays
            removed.append((f, why))
            log.info("image cache entry removed", file=f"{f.path.parent.name}/{f.path.name}", bytes=f.size,
                     why=why.value)
        return removed

    def _files(self) -> list[CacheFile]:
        out = []
        for path in self.dir.glob("*/*") if self.dir.exists() else []:
            part = _PART.fullmatch(path.name)
            key = cache_key(self.dir, path) if part is None else path.parent.name + part.group(1)
            if key is None or not _is_hex(path.parent.name):
                continue  # not ours to judge
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            out.append(CacheFile(path, key, st.st_blocks * 512, st.st_mtime, partial=part is not None))
        return out

    async def _digests(self) -> dict[str, str | None]:
        """Every image name in the store, with its content's SHA-256 (hex)."""
        try:
            infos = await self.store.images.list()
        except nats.js.errors.NotFoundError:  # nats-py's word for an empty store
            return {}
        return {i.name: imagefacts.sha256_hex(i.digest) for i in infos if not i.deleted}

    def _backing_keys(self) -> set[str]:
        """The cache entries the overlays of this node's VMI directories are backed by."""
        keys = set()
        cache = self.dir.resolve()  # as launchers wrote it, whatever symlinks the state dir's path holds
        for overlay in self.vmis_dir.glob("*/*.qcow2") if self.vmis_dir.exists() else []:
            try:
                with open(overlay, "rb") as f:
                    backing = qcow2_backing(f.read(imagefacts.HEAD_BYTES))
            except OSError:
                continue
            if backing:
                # a relative name is the overlay's directory's
                key = cache_key(cache, (overlay.parent / backing).resolve())
                if key is not None:
                    keys.add(key)
        return keys

    def _open_keys(self) -> set[str]:
        """The entries some process holds open: a QEMU using one directly (a cdrom, say), a volume
        being copied from one, however the launcher attached it."""
        cache = str(self.dir.resolve()) + "/"
        keys = set()
        for fd_dir in Path("/proc").glob("[0-9]*/fd"):
            try:
                fds = list(fd_dir.iterdir())
            except OSError:  # gone meanwhile, or not ours to read
                continue
            for fd in fds:
                try:
                    link = os.readlink(fd)
                except OSError:  # closed meanwhile (the listing's own, for one)
                    continue
                if link.startswith(cache):
                    key = cache_key(Path(cache.rstrip("/")), Path(link))
                    if key is not None:
                        keys.add(key)
        return keys

    async def _named_keys(self, digests: dict[str, str | None]) -> set[str]:
        """The entries of the images the VMIs bound here name (containerDisks, their volumes' first content)."""
        volumes = {e.key: e.value for e in await shared(self.store, self.store.volumes).items()}
        keys = set()
        for vmi in await nodevmis.copies_here(self.store, self.node):  # a migration's target's too
            if vmi.phase in FINAL_PHASES and vmi.torn_down:
                continue
            for name in _images_named(vmi, {k: v.image for k, v in volumes.items()}):
                key = digests.get(name)
                if key is not None:
                    keys.add(key)
        return keys


def _unlink_unless_used(f: CacheFile) -> bool:
    try:
        if f.path.stat().st_mtime != f.last_used:
            return False
        f.path.unlink()
    except FileNotFoundError:
        return False
    return True


def _images_named(vmi: VMI, volume_images: dict[str, str | None]) -> set[str]:
    names = {image for v in vmi.spec.volumes if isinstance(image := getattr(v.source, "image", None), str)}
    for _, claim in claims(vmi.spec.volumes):
        image = volume_images.get(claim)
        if image is not None:
            names.add(image)
    return names
