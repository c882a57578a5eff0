"""``virtbus console NAME --log --until TEXT``: the current run's serial output, printed as it comes
until TEXT appears in it.

One ordered consumer of the console stream, from its start: the chunks of earlier runs are passed
over, the current run's are printed the moment the launcher publishes them. (It used to re-read the
whole log every half second: a new consumer and every chunk again each time, and the text seen up to
half a second late.)
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import nats.errors
from nats.js.api import DeliverPolicy

from ctl.client import ApiClient
from proto import subjects
from proto.console import RUN_HEADER
from proto.errors import ApiError, Code


class RunLog:
    """Which chunks of the console stream belong to the run being followed (a VMI's uid), and
    whether the awaited text has appeared in that run's output. Pure: no I/O.

    Following run None (no instance when asked) follows whichever run the stream shows last, as
    ``--log`` alone prints the last run's output. Following a run, a chunk of any other run is
    either an earlier run's (passed over) or a later one's, after a restart: ``accept`` says when
    the caller must find out which, and ``learn`` takes the answer.
    """

    def __init__(self, run: str | None, until: bytes) -> None:
        self.run = run
        self.until = until
        self.text = bytearray()
        self._latest = run is None
        self._earlier: set[str | None] = set()

    def accept(self, run: str | None, data: bytes) -> bytes | None:
        """What to print of a chunk; None when it is of a run not known to be current or earlier."""
        if run == self.run:
            self.text += data
            return data
        if self._latest:
            self.run = run
            self.text = bytearray(data)
            return data
        if run in self._earlier:
            return b""
        return None

    def learn(self, current: str | None, run: str | None, data: bytes) -> bytes:
        """The current run is `current`: the chunk of `run` is printed if it is that run's."""
        if current is not None and current == run:
            self.run = run
            self.text = bytearray(data)  # a restart: the text is awaited in the new run's output
            return data
        self._earlier.add(run)
        return b""

    @property
    def done(self) -> bool:
        return self.until in self.text


async def current_run(api: ApiClient, name: str) -> str | None:
    vmi = await api.vmi_or_none(name)
    return vmi.uid if vmi is not None else None


async def follow(api: ApiClient, name: str, until: str, patience: float,
                 write: Callable[[bytes], None],
                 run_of: Callable[[ApiClient, str], Awaitable[str | None]] = current_run) -> None:
    """Print NAME's current run's console output as it comes until `until` appears in it; an
    UNAVAILABLE ApiError if it does not within `patience` seconds."""
    deadline = time.monotonic() + patience
    log = RunLog(await run_of(api, name), until.encode())
    sub = await api.nc.jetstream().subscribe(subjects.console_out_any_node(name), ordered_consumer=True,
                                             deliver_policy=DeliverPolicy.ALL)
    try:
        while not log.done:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ApiError(Code.UNAVAILABLE, f"{until!r} did not appear on the console within {patience:.0f}s")
            try:
                msg = await sub.next_msg(timeout=left)
            except nats.errors.TimeoutError:
                continue
            run = (msg.headers or {}).get(RUN_HEADER)
            shown = log.accept(run, msg.data)
            if shown is None:
                shown = log.learn(await run_of(api, name), run, msg.data)
            if shown:
                write(shown)
    finally:
        await sub.unsubscribe()
