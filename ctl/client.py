"""A thin client of the api service: one request, one typed reply (or the ApiError it carries)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy, ObjectInfo, ObjectMeta

from proto import subjects
from proto.api import NameRequest, VMIReply, decode_reply, encode
from proto.console import RUN_HEADER
from proto.errors import ApiError, Code
from proto.events import Event
from proto.state import VMI
from servicekit.connection import Refusals, connect_nats
from servicekit.endpoints import BUSY

T = TypeVar("T")
DEFAULT_URL = "nats://127.0.0.1:4222"
LAB_DIR = "/var/lib/virtbus/lab"
BUSY_BACKOFF = (0.1, 0.2, 0.4, 0.8, 1.6, 0.0)  # then give up with the busy error
CONNECT_ATTEMPTS = 6  # half a second apart: a command fails in about 3 s when NATS is down


def default_url() -> str:
    return os.environ.get("NATS_URL", DEFAULT_URL)


def default_creds(given: str | None) -> str | None:
    """--creds, else NATS_CREDS, else the one-machine lab's admin seed when there is one (as the
    NATS CLI finds its context)."""
    if given:
        return given
    if os.environ.get("NATS_CREDS"):
        return os.environ["NATS_CREDS"]
    lab = Path(os.environ.get("VIRTBUS_LAB_DIR", LAB_DIR)) / "creds" / "admin.nk"
    return str(lab) if lab.is_file() else None


class ApiClient:
    def __init__(self, nc: Client, timeout: float = 10.0, refusals: Refusals | None = None) -> None:
        self.nc = nc
        self.timeout = timeout
        self.refusals = refusals or Refusals()

    @classmethod
    async def connect(cls, url: str, creds: str | None = None) -> ApiClient:
        refusals = Refusals()
        nc = await connect_nats(url, "virtbus-cli", attempts=CONNECT_ATTEMPTS, creds=default_creds(creds),
                                refusals=refusals)
        return cls(nc, refusals=refusals)

    def forbidden(self, what: str) -> ApiError:
        return ApiError(Code.FORBIDDEN, f"these credentials may not {what} (the NATS server refused: "
                                        f"{', '.join(self.refusals.any())}); use an admin's (--creds)")

    async def _request(self, subject: str, data: bytes) -> Msg:
        """The reply, or ApiError(FORBIDDEN) as soon as the server says it refused the request."""
        request = asyncio.ensure_future(self.nc.request(subject, data, timeout=self.timeout))
        refused = asyncio.ensure_future(self.refusals.wait(subject))
        try:
            await asyncio.wait({request, refused}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            refused.cancel()
        if not request.done():
            request.cancel()
            raise self.forbidden(f"send {subject}")
        return request.result()

    async def close(self) -> None:
        await self.nc.close()

    async def call(self, kind: str, verb: str, body: Any, reply: type[T]) -> T:
        return await self.request(subjects.api(kind, verb), body, reply, "virtbus api service",
                                  "is the scheduler up?")

    async def request(self, subject: str, body: Any, reply: type[T], who: str, hint: str) -> T:
        """One request to who, one typed reply (or the ApiError it carries); silence is Unavailable."""
        data = body if isinstance(body, bytes) else encode(body)
        for delay in BUSY_BACKOFF:
            try:
                msg = await self._request(subject, data)
            except nats.errors.NoRespondersError:
                raise ApiError(Code.UNAVAILABLE, f"no {who} is answering ({hint})") from None
            except nats.errors.TimeoutError:
                raise ApiError(Code.UNAVAILABLE, f"the {who} did not answer within {self.timeout:.0f}s") from None
            try:
                return decode_reply(msg.data, reply)
            except ApiError as exc:
                if exc.code is not Code.UNAVAILABLE or exc.message != BUSY.message:
                    raise
            await asyncio.sleep(delay)  # the service sheds load: a moment later it takes us
        raise BUSY

    async def put_image(self, name: str, data: Any, meta: ObjectMeta) -> ObjectInfo:
        """Stream data (anything with readinto) into the image store as object name."""
        store = await self.nc.jetstream().object_store(subjects.OBJECT_STORE_IMAGES)
        try:
            return await store.put(name, data, meta=meta)
        except nats.errors.TimeoutError:
            if self.refusals.any():  # a refused write is never acknowledged
                raise self.forbidden("write the image store") from None
            raise

    async def vmi_or_none(self, name: str) -> VMI | None:
        """The VM's instance, None when it has none (stopped, or no such VM)."""
        try:
            return (await self.call("vmi", "get", NameRequest(name=name), VMIReply)).item
        except ApiError as exc:
            if exc.code is not Code.NOT_FOUND:
                raise
            return None

    async def console_log(self, vmi: str) -> bytes:
        """Everything the VMI's serial console printed so far in its current run (the last run's,
        once it has ended); earlier runs stay in the stream."""
        instance = await self.vmi_or_none(vmi)
        uid = instance.uid if instance else None
        js = self.nc.jetstream()
        sub = await js.subscribe(subjects.console_out_any_node(vmi), ordered_consumer=True,
                                 deliver_policy=DeliverPolicy.ALL)
        out = bytearray()
        seen: str | None = None
        try:
            info = await sub.consumer_info()
            # Nothing pending may also mean the server already pushed it all to us (a busy client
            # asks late): only nothing delivered either is an empty log.
            if info.num_pending == 0 and not (info.delivered and info.delivered.consumer_seq):
                return b""
            async for msg in sub.messages:
                run = (msg.headers or {}).get(RUN_HEADER)
                if uid is None and run != seen:
                    out.clear()  # a later run: show only the last one
                    seen = run
                if uid is None or run == uid:
                    out += msg.data
                if msg.metadata.num_pending == 0:
                    break
        finally:
            await sub.unsubscribe()
        return bytes(out)

    async def events(self, follow: bool, handle: Any) -> None:
        """Every recorded event in order, then (with follow) new ones as they come."""
        js = self.nc.jetstream()
        try:
            last = (await js.stream_info(subjects.STREAM_EVENTS)).state.last_seq
        except nats.js.errors.NotFoundError:
            last = 0
        sub = await js.subscribe(subjects.EVENTS_ALL, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
        try:
            if not follow and not last:
                return
            async for msg in sub.messages:
                try:
                    handle(_event_decoder.decode(msg.data))
                except msgspec.DecodeError:  # anyone may publish there: not an event, not shown
                    print(f"virtbus: an event on {msg.subject} does not decode; skipped", file=sys.stderr)
                if not follow and msg.metadata.sequence.stream >= last:
                    return
        finally:
            await sub.unsubscribe()

    async def watch_vmis(self, handle: Any) -> None:
        # here, not at the top: the store's stored-record checks are a tenth of every command's start-up
        from proto.stored import BadStoredValue
        from servicekit.store import Bucket

        store = await self.nc.jetstream().key_value(subjects.BUCKET_VMIS)
        watcher = await store.watchall()
        vmis: Bucket[VMI] = Bucket(store, VMI)  # its checks only: what fails them is not shown
        while True:
            update = await watcher.updates(timeout=None)  # type: ignore[no-untyped-call]
            if update is None or not vmis.key_ok(update.key):
                continue
            try:
                handle(update.key, vmis.decode(update.key, update.value) if update.value else None)
            except BadStoredValue as bad:
                print(f"virtbus: {bad}; skipped", file=sys.stderr)

    async def watch_vm_keys(self, handle: Callable[[str], Awaitable[None]]) -> None:
        """The name of each VM whose row may have changed: its record's key in `vms`, or its instance's in
        `vmis` (a VM's status is its instance's), every current one first, then as they change."""
        js = self.nc.jetstream()
        changed: asyncio.Queue[str] = asyncio.Queue()

        async def follow(bucket: str) -> None:
            watcher = await (await js.key_value(bucket)).watchall()
            while True:
                update = await watcher.updates(timeout=None)  # type: ignore[no-untyped-call]
                if update is not None and subjects.is_dns1123_label(update.key):
                    changed.put_nowait(update.key)

        followers = [asyncio.create_task(follow(b)) for b in (subjects.BUCKET_VMS, subjects.BUCKET_VMIS)]
        try:
            while True:
                done = [f for f in followers if f.done()]
                if done:
                    done[0].result()  # a watch that failed ends this one with its error
                getting = asyncio.create_task(changed.get())
                await asyncio.wait([getting, *followers], return_when=asyncio.FIRST_COMPLETED)
                if getting.done():
                    await handle(getting.result())
                else:
                    getting.cancel()
        finally:
            for follower in followers:
                follower.cancel()
            await asyncio.gather(*followers, return_exceptions=True)


_event_decoder = msgspec.json.Decoder(Event)


def to_builtins(value: Any) -> Any:
    return msgspec.to_builtins(value)
