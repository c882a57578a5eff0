"""The cluster's configuration in the control plane: ``virtbus.api.kubevirt.apply|get`` (KubeVirt's
KubeVirt CR, proto.clusterconfig) and the watch every scheduler process keeps of it.

One key holds it (``config/kubevirt``, written only by the control plane: proto.permissions). Each
process watches that key and hands the current values to what decides with them (the binder's
cpuAllocationRatio, the API's node view) as plain values; a change applies to the next decisions and
never moves what already runs. No key, or a value that fails its checks (written by hand: set aside
with an event, proto.stored), reads as KubeVirt's defaults, the same in every process.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import structlog

from proto import clusterconfig, subjects
from proto.api import ListRequest, decode_request
from proto.clusterconfig import DEFAULT, ClusterConfig, ClusterConfigReply
from proto.errors import ApiError, Code
from proto.manifest import load_manifest
from servicekit.store import Bucket, Store

log = structlog.get_logger()
REWATCH_S = 1.0


async def config_bucket(store: Store) -> Bucket[ClusterConfig]:
    # the control plane's only: a node's connect neither needs nor waits for it
    return await store.control_bucket(subjects.BUCKET_CONFIG, ClusterConfig)


class ClusterConfigWatch:
    """The configuration as this process last saw it; listeners hear each change."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.current = DEFAULT
        self.revision = 0
        self.primed = asyncio.Event()  # the stored value (or its absence) has been read once
        self._listeners: list[Callable[[ClusterConfig], None]] = []

    @property
    def cpu_ratio(self) -> int:
        return self.current.cpu_allocation_ratio

    def listen(self, listener: Callable[[ClusterConfig], None]) -> None:
        self._listeners.append(listener)

    def saw(self, config: ClusterConfig | None, revision: int) -> None:
        """A value at ``revision`` (None: no key, or a bad value): taken if newer than the one held."""
        if revision < self.revision:
            return
        self.revision = revision
        new = config or DEFAULT
        if new == self.current:
            return
        old, self.current = self.current, new
        log.info("cluster configuration", cpu_allocation_ratio=new.cpu_allocation_ratio,
                 was=old.cpu_allocation_ratio)
        for listener in self._listeners:
            listener(new)

    async def run(self) -> None:
        """Watch the key forever; a watch that ends or fails starts again and replays the value."""
        while True:
            try:
                bucket = await config_bucket(self.store)
                # closed here when cancelled, not by the garbage collector after the loop is gone
                async with contextlib.aclosing(bucket.updates(subjects.CONFIG_KUBEVIRT)) as updates:
                    async for change in updates:
                        if change is None:
                            self.primed.set()
                            continue
                        self.saw(change.value, change.revision)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - logged, and the watch starts again
                log.warning("config watch ended; starting it again", error=str(exc) or type(exc).__name__)
            await asyncio.sleep(REWATCH_S)


class ClusterConfigApi:
    """``kubevirt.apply`` stores a KubeVirt CR's configuration (validated first: a bad one changes
    nothing); ``kubevirt.get`` reads it back (``list`` too, as kubectl lists the one KubeVirt CR)."""

    def __init__(self, store: Store, *, watch: ClusterConfigWatch | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        """watch: this process's, told of an apply at once (else its watch brings it a moment later)."""
        self.store = store
        self.watch = watch
        self.clock = clock
        self._bucket: Bucket[ClusterConfig] | None = None

    async def bucket(self) -> Bucket[ClusterConfig]:
        if self._bucket is None:
            self._bucket = await config_bucket(self.store)
        return self._bucket

    def table(self) -> dict[tuple[str, str], Callable[[bytes], object]]:
        return {("kubevirt", "apply"): self.apply, ("kubevirt", "get"): self.get, ("kubevirt", "list"): self.get}

    async def current(self) -> ClusterConfig:
        """What decisions use now: the watch's value once it has one, else the stored one."""
        if self.watch is not None and self.watch.primed.is_set():
            return self.watch.current
        entry = await (await self.bucket()).get(subjects.CONFIG_KUBEVIRT)
        return entry.value if entry is not None else DEFAULT

    async def apply(self, body: bytes) -> ClusterConfigReply:
        obj = load_manifest(body, content_type="json")
        if not clusterconfig.is_kubevirt(obj):
            raise ApiError(Code.BAD_REQUEST, f"this subject takes a {clusterconfig.KIND} manifest", "kind")
        config = clusterconfig.parse(obj, self.clock())
        revision = await (await self.bucket()).put(subjects.CONFIG_KUBEVIRT, config)
        if self.watch is not None:
            self.watch.saw(config, revision)
        log.info("cluster configuration applied", cpu_allocation_ratio=config.cpu_allocation_ratio)
        return ClusterConfigReply(item=config)

    async def get(self, body: bytes) -> ClusterConfigReply:
        decode_request(body, ListRequest)
        entry = await (await self.bucket()).get(subjects.CONFIG_KUBEVIRT)
        return ClusterConfigReply(item=entry.value if entry is not None else DEFAULT)
