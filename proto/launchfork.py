"""The node-local protocol between a handler and its launcher fork server (launcher.forkserver):
one request per connection, one line of JSON each way. The reply says the launcher's pid at once;
the same connection later carries its exit code, so the handler learns how a launcher ended (a lost
race to another launcher, say) as it did from the process it spawned itself."""

from __future__ import annotations

import msgspec

MAX_LINE = 64 * 1024  # a request's arguments are names and paths: far below this


class ForkRequest(msgspec.Struct, frozen=True, kw_only=True):
    args: list[str]  # what `python -m launcher` takes
    log: str  # the launcher's stdout and stderr go to this file (appended)


class Forked(msgspec.Struct, frozen=True, kw_only=True):
    pid: int | None = None  # the launcher's, once forked
    exit_code: int | None = None  # later, once it ended (negative: the signal that ended it)
    error: str | None = None  # no launcher was forked, and why


def encode(message: ForkRequest | Forked) -> bytes:
    return msgspec.json.encode(message) + b"\n"
