"""One connection to NATS, as every virtbus process and the CLI make it: authenticated (an nkey
seed), over TLS where the URL says ``tls://``, reconnecting forever for services and giving up with
one clear error for a command."""

from __future__ import annotations

import asyncio
import os
import ssl
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import nats
import structlog
from nats.aio.client import Client

from proto.errors import ApiError, Code


class Refusals:
    """What the server refused this connection by its permissions, subject by subject, as it says so
    (asynchronously: a refused publish or request otherwise just gets no answer)."""

    _PREFIX = "permissions violation for publish to "

    def __init__(self) -> None:
        self._refused: dict[str, asyncio.Event] = {}

    def _event(self, subject: str) -> asyncio.Event:
        # nats-py lowercases the server's message, subject included
        return self._refused.setdefault(subject.lower(), asyncio.Event())

    def note(self, exc: Exception) -> None:
        text = str(exc).lower()
        if self._PREFIX in text:
            self._event(text.split(self._PREFIX, 1)[1].strip().strip('"')).set()

    def refused(self, subject: str) -> bool:
        return self._event(subject).is_set()

    async def wait(self, subject: str) -> None:
        await self._event(subject).wait()

    def any(self) -> list[str]:
        return sorted(s for s, e in self._refused.items() if e.is_set())


async def connect_nats(url: str, name: str, attempts: int = -1, *, creds: str | None = None,
                       inbox: str | None = None, refusals: Refusals | None = None) -> Client:
    """url: one server, or several separated by commas (the seeds of a cluster; any one will do).
    attempts: -1, as services do, keeps trying (also to connect at all) and logs each failure in a
    line; a command gives up after a few and says so once, in the ApiError.
    creds: the nkey seed file this client authenticates with (None: NATS_CREDS, else anonymous).
    inbox: the reply-subject prefix this client's permissions allow (None: NATS's default)."""
    creds = creds or os.environ.get("NATS_CREDS") or None
    if creds is not None and not os.path.isfile(creds):
        raise ApiError(Code.INVALID, f"credentials file {creds} does not exist (--creds or NATS_CREDS)")
    extra: dict[str, Any] = {}
    if creds is not None:
        extra["nkeys_seed"] = creds
    if inbox is not None:
        extra["inbox_prefix"] = inbox
    tls = tls_context(url)
    if tls is not None:
        extra["tls"] = tls

    async def failed(exc: Exception) -> None:  # nats-py's default prints a traceback per attempt
        if refusals is not None:
            refusals.note(exc)
        if attempts < 0:
            structlog.get_logger().warning("nats", url=url, error=str(exc) or type(exc).__name__)

    try:
        return await nats.connect(
            [u.strip() for u in url.split(",") if u.strip()], name=name, connect_timeout=3,
            max_reconnect_attempts=attempts, reconnect_time_wait=0.5, allow_reconnect=True, error_cb=failed,
            **extra,
        )
    except Exception as exc:  # nats raises several kinds; the user needs one clear message
        raise ApiError(Code.UNAVAILABLE, f"cannot reach NATS at {url}: {exc or type(exc).__name__}") from None


def tls_context(url: str) -> ssl.SSLContext | None:
    """For tls:// URLs: verify the server against NATS_CA (the cluster's generated CA), else the
    system's roots."""
    if not any(u.strip().startswith("tls://") for u in url.split(",")):
        return None
    ca = os.environ.get("NATS_CA")
    context = ssl.create_default_context(cafile=ca or None)
    return context


class _Reconnects:
    """Who wants to hear that a connection came back: its plain subscriptions may have missed
    messages while it was down (servicekit.kvlive)."""

    def __init__(self, before: Callable[[], Awaitable[None]] | None) -> None:
        self.before = before  # the callback the client had: still called
        self.events: set[asyncio.Event] = set()

    async def fire(self) -> None:
        for event in self.events:
            event.set()
        if self.before is not None:
            await self.before()


_RECONNECTS: weakref.WeakKeyDictionary[Client, _Reconnects] = weakref.WeakKeyDictionary()


def reconnected(nc: Client) -> asyncio.Event:
    """An event set the next time ``nc`` reconnects; ``forget`` it when done."""
    hub = _RECONNECTS.get(nc)
    if hub is None:  # nats-py calls this attribute, set at connect, after each reconnect
        hub = _RECONNECTS[nc] = _Reconnects(nc._reconnected_cb)  # noqa: SLF001
        nc._reconnected_cb = hub.fire  # noqa: SLF001
    event = asyncio.Event()
    hub.events.add(event)
    return event


def forget(nc: Client, event: asyncio.Event) -> None:
    hub = _RECONNECTS.get(nc)
    if hub is not None:
        hub.events.discard(event)
