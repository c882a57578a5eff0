"""Typed access to the JetStream KV buckets that hold virtbus's desired and observed state.

Every write that depends on what was read is a compare-and-set on the entry's revision: a lost
race surfaces as ApiError(CONFLICT) and the caller re-reads. ``mutate`` wraps that loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, cast

import msgspec
import nats
import nats.js.errors
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType, StreamConfig, StreamInfo
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from proto import stored, subjects
from proto.errors import ApiError, Code
from proto.events import Event
from proto.nodevmis import NodeVmi
from proto.snapshots import VMSnapshot, VolumeSnapshot
from proto.state import VM, VMI, Node, NodeLease, PersistentVolume, VmiLease
from proto.stored import BadStoredValue
from servicekit import jspublish, kvlive, kvwatch, natsfaults, streamlimits
from servicekit.connection import connect_nats

T = TypeVar("T")

_CONFLICT_RETRIES = 20
_WRONG_LAST = (10071, 10164)  # nats-server: the key's last revision is not the one expected
_ECHOES = 4096  # this process's writes remembered for its watches of the same bucket (see _Echoes)
_event_encoder = msgspec.json.Encoder()


@dataclass(frozen=True)
class Entry(Generic[T]):
    key: str
    value: T
    revision: int


@dataclass(frozen=True)
class Change(Generic[T]):
    """One update seen by a watch: value is None when the key was deleted."""

    key: str
    value: T | None
    revision: int


class _SeenBad:
    """Which bad entries a Store already reported: once per (bucket, key, revision), however many
    watches and reads meet it, so a bad value makes one log line and one event, not a flood."""

    def __init__(self, size: int = 4096) -> None:
        self._seen: dict[tuple[str, str, int], None] = {}
        self._size = size

    def first(self, bad: BadStoredValue, revision: int) -> bool:
        mark = (bad.bucket, bad.key, revision)
        if mark in self._seen:
            return False
        if len(self._seen) >= self._size:
            del self._seen[next(iter(self._seen))]
        self._seen[mark] = None
        return True


class _Echoes(Generic[T]):
    """What this process is writing to a bucket it also watches: each key's last value sent, with
    its bytes. A watch that then delivers exactly those bytes under that key gets the value as it
    was written, validated when it was encoded, instead of decoding and validating the same bytes
    again (the binder reads back each of its binds and status writes). By the bytes, not by the
    revision: the watch often delivers a write before its ack is back. Only while a watch runs;
    the oldest are forgotten past ``size``: a miss only means a decode."""

    def __init__(self, size: int = _ECHOES) -> None:
        self._sent: dict[str, tuple[bytes, T]] = {}
        self._size = size
        self.watches = 0

    def sending(self, key: str, data: bytes, value: T) -> None:
        if not self.watches:
            return
        self._sent.pop(key, None)  # to the end: the dict's order is the order of writes
        if len(self._sent) >= self._size:
            del self._sent[next(iter(self._sent))]
        self._sent[key] = (data, value)

    def take(self, key: str, data: bytes) -> T | None:
        sent = self._sent.get(key)
        if sent is None or sent[0] != data:
            return None
        del self._sent[key]
        return sent[1]

    def __len__(self) -> int:
        return len(self._sent)


_DECODERS: dict[type, msgspec.json.Decoder[Any]] = {}


def decoder(kind: type[T]) -> msgspec.json.Decoder[T]:
    """One decoder per stored type and process: making one reads the type's annotations (~0.4 ms
    each, 4 ms for a store's buckets), and a launcher's fork server makes them once for all
    its launchers (``prepare_decoders``)."""
    made = _DECODERS.get(kind)
    if made is None:
        made = _DECODERS[kind] = msgspec.json.Decoder(kind)
    return made


def prepare_decoders() -> None:
    for kind in RECORD_KINDS:
        decoder(kind)


class Bucket(Generic[T]):
    """Typed entries of one bucket. Every key and value read is decoded and validated with the API's
    rules (proto.stored); one that fails is set aside: ``get`` takes it for absent, ``watch`` for
    deleted (a hostile key is not passed on at all), with one log line and one event per revision.
    Writes are validated too, so nothing a reader would set aside is ever written by us."""

    def __init__(self, kv: KeyValue, kind: type[T], *, validate: stored.Validator | None = None,
                 on_bad: Callable[[BadStoredValue], Awaitable[None]] | None = None,
                 seen: _SeenBad | None = None) -> None:
        self._kv = kv
        self.name = str(getattr(kv, "_name", "?"))
        self._kind = kind
        self._decoder = decoder(kind)
        self._encoder = msgspec.json.Encoder()
        self._validate = validate or stored.validator(kind)
        self._on_bad = on_bad
        self._seen = seen or _SeenBad()
        self.echoes: _Echoes[T] = _Echoes()

    def key_ok(self, key: str) -> bool:
        try:
            stored.check_key(self._kind, key)
        except ApiError:
            return False
        return True

    def decode(self, key: str, data: bytes) -> T:
        """The value stored under ``key``, decoded and validated; else BadStoredValue."""
        try:
            stored.check_key(self._kind, key)
        except (ApiError, ValueError) as exc:
            raise BadStoredValue(self.name, key, str(exc)) from None
        return self._decode_checked(key, data)

    def _decode_checked(self, key: str, data: bytes) -> T:
        """decode, for a key ``key_ok`` has passed: a burst's every change was checking its key twice."""
        try:
            value = self._decoder.decode(data)
            self._validate(key, value)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise BadStoredValue(self.name, key, f"does not decode: {exc}") from None
        except (ApiError, ValueError) as exc:
            raise BadStoredValue(self.name, key, str(exc)) from None
        return value

    def _encode(self, key: str, value: T) -> bytes:
        stored.check_key(self._kind, key)
        self._validate(key, value)  # ApiError(INVALID): never write what a reader would set aside
        data = self._encoder.encode(value)
        self.echoes.sending(key, data, value)
        return data

    async def _set_aside(self, bad: BadStoredValue, revision: int) -> None:
        if self._seen.first(bad, revision):
            structlog.get_logger().warning("stored value set aside", bucket=bad.bucket, key=bad.key[:100],
                                           revision=revision, reason=bad.reason[:300])
            if self._on_bad is not None:
                await self._on_bad(bad)

    async def get(self, key: str) -> Entry[T] | None:
        if not self.key_ok(key):
            return None  # no valid entry can have this key, and nats-py would raise on some
        try:
            with natsfaults.Answering(self.name, key):
                entry = await self._kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None
        if entry.value is None or entry.revision is None:
            return None
        try:
            return Entry(key, self._decode_checked(key, entry.value), entry.revision)
        except BadStoredValue as bad:
            await self._set_aside(bad, entry.revision)
            return None

    async def require(self, key: str, what: str) -> Entry[T]:
        entry = await self.get(key)
        if entry is None:
            raise ApiError(Code.NOT_FOUND, f"{what} {key!r} not found")
        return entry

    async def create(self, key: str, value: T) -> int:
        try:
            with natsfaults.Answering(self.name, key):
                return int(await self._kv.create(key, self._encode(key, value)))
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.KeyNotFoundError):
            # KeyNotFoundError: on a cluster, nats-server refuses a create that races another one
            # still being replicated, before the winner can be read; nats-py's create then reads the
            # key (a deleted key may be created again) and finds nothing. Either way another's won.
            raise ApiError(Code.ALREADY_EXISTS, f"{key!r} already exists") from None

    async def update(self, key: str, value: T, revision: int) -> int:
        try:
            with natsfaults.Answering(self.name, key):
                return int(await self._kv.update(key, self._encode(key, value), last=revision))
        except nats.js.errors.KeyWrongLastSequenceError:
            raise ApiError(Code.CONFLICT, f"{key!r} changed meanwhile") from None

    async def put(self, key: str, value: T) -> int:
        with natsfaults.Answering(self.name, key):
            return int(await self._kv.put(key, self._encode(key, value)))

    async def delete(self, key: str, revision: int | None = None) -> None:
        """The key goes: a marker that tells watchers so (a compare-and-delete with ``revision``). Its
        revisions stay with the marker until the leader's sweep takes the key out whole, once every
        watch has long had it (servicekit.kvmarkers: a purge now would make other watches skip
        writes)."""
        try:
            with natsfaults.Answering(self.name, key):  # a 503 is an APIError too: it leaves as ApiError
                # unchecked: a key read off the bucket goes even when it is no name nats-py would write
                await self._kv.delete(key, last=revision, validate_keys=False)
        except nats.js.errors.APIError as exc:
            if exc.err_code in _WRONG_LAST:
                raise ApiError(Code.CONFLICT, f"{key!r} changed meanwhile") from None
            raise

    async def items(self) -> list[Entry[T]]:
        """Every key's current value, each key once: a key that changes while it is read is
        delivered again (its newer value), or deleted, before the read knows it has them all."""
        out: dict[str, Entry[T]] = {}
        async for change in self.watch(initial_only=True):
            if change.value is None:
                out.pop(change.key, None)
            else:
                out[change.key] = Entry(change.key, change.value, change.revision)
        return list(out.values())

    async def watch(self, keys: str = ">", *, initial_only: bool = False) -> AsyncIterator[Change[T]]:
        """Current values first, then (unless initial_only) every later change, forever; only keys
        matching ``keys`` (a key, or a pattern with ``*``/``>``), filtered by the server. The watch's
        consumer is deleted when the iteration ends (servicekit.kvwatch)."""
        async with contextlib.aclosing(self.updates(keys)) as updates:  # its consumer goes now
            async for change in updates:
                if change is None:
                    if initial_only:
                        return
                    continue
                yield change

    async def updates(self, keys: str = ">", *,
                      republished: str | None = None) -> AsyncGenerator[Change[T] | None, None]:
        """As ``watch``, with None once after the current values (an informer's cue that it has them all).
        republished: where the bucket's stream republishes what it stores; the changes are heard
        there (servicekit.kvlive) instead of through a consumer."""
        self.echoes.watches += 1
        source = kvwatch.watch(self._kv, keys) if republished is None else kvlive.live(self._kv, keys, republished)
        try:
            async with contextlib.aclosing(source) as updates:
                async for update in updates:
                    if update is None:
                        yield None
                        continue
                    change = await self._change(update)
                    if change is not None:
                        yield change
        finally:
            self.echoes.watches -= 1

    async def _change(self, update: kvwatch.RawUpdate) -> Change[T] | None:
        """One watched update as a Change; a bad value reads as a deletion, a hostile key as nothing."""
        rev = update.revision
        deleted = update.deleted or not update.value
        if not self.key_ok(update.key):
            if not deleted:  # its going needs no report
                await self._set_aside(BadStoredValue(self.name, update.key, "the key is not a safe name"), rev)
            return None
        if deleted:
            return Change(update.key, None, rev)
        if (written := self.echoes.take(update.key, update.value)) is not None:
            return Change(update.key, written, rev)  # the bytes this process encoded, validated then
        try:
            return Change(update.key, self._decode_checked(update.key, update.value), rev)
        except BadStoredValue as bad:
            await self._set_aside(bad, rev)
            return Change(update.key, None, rev)

    async def mutate(self, key: str, change: Callable[[T], T | None]) -> Entry[T] | None:
        """Read, apply ``change``, write back by CAS; retry on conflict. None from change: no write.

        Returns the entry as written (or as read when nothing was written), None if the key is gone.
        """
        for _ in range(_CONFLICT_RETRIES):
            current = await self.get(key)
            if current is None:
                return None
            new = change(current.value)
            if new is None or new == current.value:
                return current
            try:
                rev = await self.update(key, new, current.revision)
            except ApiError as exc:
                if exc.code is Code.CONFLICT:
                    await asyncio.sleep(0.01)
                    continue
                raise
            return Entry(key, new, rev)
        raise ApiError(Code.CONFLICT, f"{key!r} kept changing; try again")


class _Stoppable(Protocol):
    async def stop(self) -> None: ...


RECORD_KINDS: tuple[type, ...] = (VM, VMI, Node, VmiLease, NodeVmi, NodeLease, PersistentVolume, VolumeSnapshot,
                                  VMSnapshot)  # what Store's buckets hold


class Store:
    """The connection plus every bucket; ``connect`` creates buckets and streams when missing."""

    def __init__(self, nc: Client, js: JetStreamContext, kvs: dict[str, KeyValue], images: ObjectStore,
                 snapshot_objects: ObjectStore, *, records_events: bool = True,
                 republishing: frozenset[str] | None = None):
        self.nc = nc
        self.js = js
        self.raw = kvs
        # A node may not publish events (proto.permissions): what it sets aside it logs, and the
        # control plane, which reads the same state, records the event.
        self.records_events = records_events
        self._seen_bad = _SeenBad()
        # the buckets whose streams republish what they store (``republishes``), as connect found them;
        # a store made without asking the server (a launcher's) takes them all to
        self.republishing = frozenset(b for b in kvs if subjects.republished_at(b) is not None) \
            if republishing is None else republishing
        self.vms = self.bucket(subjects.BUCKET_VMS, VM)
        self.vmis = self.bucket(subjects.BUCKET_VMIS, VMI)
        self.nodes = self.bucket(subjects.BUCKET_NODES, Node)
        self.vmi_leases = self.bucket(subjects.BUCKET_VMI_LEASES, VmiLease)
        # each node's VMI copies, in one of several buckets (subjects.node_vmis_bucket)
        self.node_vmi_shards = {b: self.bucket(b, NodeVmi) for b in subjects.NODE_VMI_BUCKETS}
        self.node_leases = self.bucket(subjects.BUCKET_NODE_LEASES, NodeLease)
        self.volumes = self.bucket(subjects.BUCKET_VOLUMES, PersistentVolume)
        self.images = images
        self.snapshots = self.bucket(subjects.BUCKET_SNAPSHOTS, VolumeSnapshot)
        self.vm_snapshots = self.bucket(subjects.BUCKET_VM_SNAPSHOTS, VMSnapshot)
        self.snapshot_objects = snapshot_objects
        # the process's shared watches (servicekit.informer), by (bucket, keys): stopped at close
        self.informers: dict[tuple[str, str], _Stoppable] = {}

    @classmethod
    async def connect(cls, url: str, name: str, *, creds: str | None = None, inbox: str | None = None,
                      create: bool = True, check: bool = True) -> Store:
        """create: make missing buckets and streams (the control plane's and admin's right); a node
        may not, and waits until the control plane has made them. check=False (a launcher): trust
        that they exist, asking the server nothing; a missing bucket is then an ApiError(UNAVAILABLE)
        naming it at the first watch."""
        copies = replicas()
        nc = await connect_nats(url, name, creds=creds, inbox=inbox)
        try:
            js = jspublish.JetStream(nc)
            if not check:
                return cls(nc, js, *_assume_all(js), records_events=False)
            waiting = _Waiting()
            while True:
                try:
                    kvs, republishing, images, snapshot_objects = await _open_all(js, copies, create)
                    break
                except nats.js.errors.NotFoundError:
                    waiting.say("waiting for the control plane to create the buckets")
                except natsfaults.TRANSIENT as exc:
                    # a cluster electing its JetStream leaders, or a server too busy to answer in
                    # time: what a start in the middle of either meets, and not a reason to end
                    if nc.is_closed:
                        raise  # given up reconnecting: nothing will answer
                    waiting.say("waiting for JetStream to answer", error=str(exc) or type(exc).__name__)
                await asyncio.sleep(1.0)
        except BaseException:
            await nc.close()  # e.g. a stream that is not its bucket's, or the caller gave up waiting
            raise
        return cls(nc, js, kvs, images, snapshot_objects, records_events=create, republishing=republishing)

    def node_vmis(self, node: str) -> Bucket[NodeVmi]:
        """The bucket of ``node``'s VMI copies (proto.nodevmis)."""
        return self.node_vmi_shards[subjects.node_vmis_bucket(node)]

    async def control_bucket(self, name: str, kind: type[T]) -> Bucket[T]:
        """A bucket only the control plane uses (its leases): made when missing, kept out of ``raw``
        so a node's connect neither needs nor waits for it."""
        return Bucket((await _ensure_kv(self.js, name, replicas()))[0], kind, on_bad=self._report_bad,
                      seen=self._seen_bad)

    async def make_control_buckets(self, names: tuple[str, ...] = subjects.CONTROL_BUCKETS) -> None:
        """The control plane's buckets made at once, before it uses them (a leader election's first):
        made one by one as each is first used, a fresh cluster's elections of their streams kept its
        scheduler waiting, and a request timed out in the middle of one ended it. Retried through a
        cluster too busy to answer in time, as connect is."""
        waiting = _Waiting()
        while True:
            try:
                await all_of([_ensure_kv(self.js, name, replicas()) for name in names])
                return
            except natsfaults.TRANSIENT as exc:
                if self.nc.is_closed:
                    raise
                waiting.say("waiting for JetStream to answer", error=str(exc) or type(exc).__name__)
                await asyncio.sleep(1.0)

    def bucket(self, name: str, kind: type[T]) -> Bucket[T]:
        """A typed view of a bucket whose bad entries are reported as events."""
        return Bucket(self.raw[name], kind, on_bad=self._report_bad, seen=self._seen_bad)

    async def _report_bad(self, bad: BadStoredValue) -> None:
        # The event's subject carries the key: a hostile key gets a placeholder, its repr the message.
        name = bad.key if subjects.is_dns1123_label(bad.key) else "unsafe-key"
        await self.emit(Event(kind="StoredValue", name=name, reason="SetAside", type="Warning",
                              message=f"{bad.bucket}/{bad.key[:100]!r} set aside: {bad.reason[:500]}",
                              timestamp=time.time()))

    async def emit(self, event: Event) -> None:
        """Record an event; losing one must not fail the act it describes."""
        if not self.records_events:
            structlog.get_logger().info("event", event_kind=event.kind, name=event.name, reason=event.reason,
                                        message=event.message)
            return
        try:
            await self.js.publish(subjects.event(event.kind, event.name), _event_encoder.encode(event),
                                  stream=subjects.STREAM_EVENTS)
        except Exception as exc:  # noqa: BLE001 - logged, not raised
            structlog.get_logger().warning("event lost", reason=event.reason, error=str(exc))

    async def close(self) -> None:
        for informer in list(self.informers.values()):
            await informer.stop()
        await self.nc.drain()
        if isinstance(self.js, jspublish.JetStream):
            await self.js.close()


class _Waiting:
    """What a connect waits for, logged when it changes and every WAIT_LOG_S while it lasts."""

    def __init__(self) -> None:
        self.last: tuple[str, float] | None = None

    def say(self, what: str, **details: str) -> None:
        now = time.monotonic()
        if self.last is None or self.last[0] != what or now - self.last[1] >= WAIT_LOG_S:
            structlog.get_logger().info(what, **details)
            self.last = (what, now)


WAIT_LOG_S = 10.0


def replicas() -> int:
    """Replicas of every bucket and stream this process creates: 1 on one nats-server, 3 on a
    3-node cluster (VIRTBUS_JS_REPLICAS; the compose lab sets it)."""
    value = os.environ.get("VIRTBUS_JS_REPLICAS", "1")
    if value not in ("1", "2", "3", "4", "5"):
        raise ApiError(Code.INVALID, f"VIRTBUS_JS_REPLICAS={value!r}: JetStream allows 1 to 5 replicas")
    return int(value)


def _assume_all(js: JetStreamContext) -> tuple[dict[str, KeyValue], ObjectStore, ObjectStore]:
    """Handles on every bucket without asking the server (a stream-info request per bucket, 20 per
    process): a thousand launchers starting together would otherwise make 20,000. Buckets are never made
    with direct gets (nats-py's default), so reads go by the stream's message-get API."""
    kvs = {b: KeyValue(name=b, stream=subjects.kv_stream(b), pre=subjects.kv_subject(b), js=js, direct=False)
           for b in subjects.STATE_BUCKETS}
    images, snapshots = (ObjectStore(name=o, stream=subjects.object_stream(o), js=js)
                         for o in (subjects.OBJECT_STORE_IMAGES, subjects.OBJECT_STORE_SNAPSHOTS))
    return kvs, images, snapshots


async def _open_all(js: JetStreamContext, copies: int,
                    create: bool) -> tuple[dict[str, KeyValue], frozenset[str], ObjectStore, ObjectStore]:
    """Every bucket, those whose streams republish (``republishes``), the object stores."""
    buckets = subjects.STATE_BUCKETS
    if not create:
        infos = {b: await js.stream_info(subjects.kv_stream(b)) for b in buckets}
        for b, info in infos.items():
            _is_bucket(b, info)
        return ({b: _kv(js, b, info) for b, info in infos.items()},
                frozenset(b for b, info in infos.items() if republishes(b, info)),
                await js.object_store(subjects.OBJECT_STORE_IMAGES),
                await js.object_store(subjects.OBJECT_STORE_SNAPSHOTS))
    opened = dict(zip(buckets, await all_of([_ensure_kv(js, b, copies) for b in buckets]), strict=True))
    kvs = {b: kv for b, (kv, _) in opened.items()}
    republishing = frozenset(b for b, (_, info) in opened.items() if republishes(b, info))
    # the object stores replicated as the state is: a snapshot is what brings a volume back when its
    # node is lost
    images, snapshot_objects = await all_of([_ensure_object_store(js, o, copies) for o in (
        subjects.OBJECT_STORE_IMAGES, subjects.OBJECT_STORE_SNAPSHOTS)])
    await all_of([_ensure_stream(js, config) for config in (
        StreamConfig(name=subjects.STREAM_CONSOLE, subjects=[subjects.CONSOLE_OUT_ALL], storage=StorageType.FILE,
                     max_msgs_per_subject=20_000, max_bytes=256 * 2**20, num_replicas=copies),
        StreamConfig(name=subjects.STREAM_EVENTS, subjects=[subjects.EVENTS_ALL], storage=StorageType.FILE,
                     max_msgs=100_000, max_age=7 * 24 * 3600, max_bytes=EVENTS_MAX_BYTES,
                     max_msg_size=64 * 1024, num_replicas=copies))])
    return kvs, republishing, images, snapshot_objects


async def all_of(steps: list[Awaitable[T]]) -> list[T]:
    """Every step at once, their results in order; the first failure raised once all have ended. A
    cluster elects each new stream's leader, seconds apiece: one stream after another, a fresh 3-server
    cluster took three minutes to have them all (the compose lab's first start)."""
    results = await asyncio.gather(*steps, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return cast(list[T], results)


# Byte limits per bucket (value, whole bucket with its history of 5): a writer gone wild fills its
# bucket, not the server's disk. A VM or VMI holds a spec with up to 2 x 64 KiB of cloud-init, which
# JSON escaping may grow; an ipam table lists a network's addresses.
_MiB = 2**20
_KV_LIMITS: dict[str, tuple[int, int]] = {  # bucket -> (max_value_size, max_bytes)
    subjects.BUCKET_VMS: (_MiB, 256 * _MiB), subjects.BUCKET_VMIS: (_MiB, 256 * _MiB),
    subjects.BUCKET_NODES: (64 * 1024, 16 * _MiB), subjects.BUCKET_NETWORKS: (16 * 1024, 16 * _MiB),
    subjects.BUCKET_IPAM: (_MiB, 64 * _MiB), subjects.BUCKET_EXPOSURES: (4096, 16 * _MiB),
    subjects.BUCKET_FLOATING_IPS: (4096, 16 * _MiB), subjects.BUCKET_LEADER: (4096, _MiB),
    subjects.BUCKET_VMI_LEASES: (1024, 16 * _MiB), subjects.BUCKET_VOLUMES: (4096, 16 * _MiB),
    subjects.BUCKET_SNAPSHOTS: (4096, 16 * _MiB), subjects.BUCKET_VM_SNAPSHOTS: (16 * 1024, 16 * _MiB),
    subjects.BUCKET_SERVICES: (16 * 1024, 16 * _MiB), subjects.BUCKET_ENDPOINTS: (256 * 1024, 64 * _MiB),
    subjects.BUCKET_ROUTES: (16 * 1024, 16 * _MiB), subjects.BUCKET_INGRESSES: (256 * 1024, 64 * _MiB),
    subjects.BUCKET_NODE_LEASES: (1024, 16 * _MiB),
    # a quarter of the copies each, with room for a skewed hash
    **{b: (_MiB, 128 * _MiB) for b in subjects.NODE_VMI_BUCKETS},
}
EVENTS_MAX_BYTES = 64 * _MiB


async def _opened(js: JetStreamContext, stream: str, create: Callable[[], Awaitable[object]],
                  check: Callable[[StreamInfo], None] = lambda _: None) -> StreamInfo:
    """The stream's info, made by ``create`` when missing, with room for a consumer per node and per
    launcher (servicekit.streamlimits); one stream-info request when it exists and has that room.
    ``check`` refuses a stream that is not what its name says before anything of it is changed."""
    try:
        info = await js.stream_info(stream)
    except nats.js.errors.NotFoundError:
        with contextlib.suppress(nats.js.errors.APIError):  # someone else created it meanwhile
            await create()
        info = await js.stream_info(stream)
    check(info)
    return await with_leader(js, await streamlimits.allow_consumers(js, info))


# On a cluster a stream made a moment ago (or whose leader's server went) has no leader until its
# replicas elect one, and until then it takes no write (nats-server answers 503). A store that opens it
# waits a while for one, so its first write does not meet a stream just born; past that, writes are
# answered UNAVAILABLE (retryable) as with any stream without a quorum.
LEADER_WAIT_S = 15.0


class StreamInfos(Protocol):
    async def stream_info(self, name: str) -> StreamInfo: ...


async def with_leader(js: StreamInfos, info: StreamInfo, wait: float = LEADER_WAIT_S) -> StreamInfo:
    """The stream's info once it has a leader, or ``wait`` seconds on; at once when it has one (a
    single server names itself)."""
    deadline = time.monotonic() + wait
    while info.cluster is not None and not info.cluster.leader and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        info = await js.stream_info(info.config.name or "")
    return info


def _is_bucket(bucket: str, info: StreamInfo) -> None:
    """A stream of a bucket's name made by hand, without a bucket's history per key, would take writes
    that no read of a key finds: refused by name (nats-py's own ``key_value`` checks the same)."""
    history = info.config.max_msgs_per_subject
    if history is None or history < 1:
        raise ApiError(Code.INTERNAL, f"stream {subjects.kv_stream(bucket)} is not the key-value bucket "
                       f"{bucket!r} (it keeps {history} messages per subject): it was not made by virtbus")


async def _ensure_kv(js: JetStreamContext, bucket: str, copies: int) -> tuple[KeyValue, StreamInfo]:
    stream = subjects.kv_stream(bucket)
    max_value_size, max_bytes = _KV_LIMITS.get(bucket, (_MiB, 64 * _MiB))
    # a node's copies, and the buckets every node follows whole, are followed as their stream
    # republishes them (servicekit.kvlive)
    at = subjects.republished_at(bucket)
    republish = None if at is None else kvlive.republishing(subjects.kv_subject(bucket), at)
    info = await _opened(js, stream, lambda: js.create_key_value(KeyValueConfig(
        bucket=bucket, history=5, storage=StorageType.FILE, replicas=copies, max_value_size=max_value_size,
        max_bytes=max_bytes, republish=republish)), lambda found: _is_bucket(bucket, found))
    if republish is not None:
        info = await kvlive.ensure_republishing(js, info, republish)
    return _kv(js, bucket, info), info


def _kv(js: JetStreamContext, bucket: str, info: StreamInfo) -> KeyValue:
    return KeyValue(name=bucket, stream=subjects.kv_stream(bucket), pre=subjects.kv_subject(bucket), js=js,
                    direct=bool(info.config.allow_direct))


def republishes(bucket: str, info: StreamInfo) -> bool:
    """Whether ``bucket``'s stream republishes what it stores where its followers listen. A stream an
    older virtbus made without it may keep it so (nats-server 2.9 refuses to add it): its followers
    then watch it through a consumer, as before."""
    at = subjects.republished_at(bucket)
    have = info.config.republish
    return at is not None and have is not None and have.dest == f"{at}.>"


async def _ensure_object_store(js: JetStreamContext, bucket: str, copies: int) -> ObjectStore:
    stream = subjects.object_stream(bucket)
    await _opened(js, stream, lambda: js.create_object_store(bucket, storage=StorageType.FILE, replicas=copies))
    return ObjectStore(name=bucket, stream=stream, js=js)


async def _ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    await _opened(js, config.name or "", lambda: js.add_stream(config, max_consumers=streamlimits.MAX_CONSUMERS))
