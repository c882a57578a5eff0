"""NATS failures that pass: the server, or a cluster's quorum, did not answer now and may in a moment.

nats-py raises each as its own exception. A caller of the store, or a client of the API, needs one
thing from them: that a retry may help. So they become ApiError(UNAVAILABLE), whose body says
``retryable``, instead of an internal error with no policy. What a retry cannot mend (a refused
permission, a bad request, a missing stream) is not among them.
"""

from __future__ import annotations

from types import TracebackType

import nats.errors
import nats.js.errors

from proto.errors import ApiError, Code

TRANSIENT: tuple[type[Exception], ...] = (
    nats.js.errors.ServiceUnavailableError,  # 503: a cluster electing leaders, or without a quorum
    nats.js.errors.NoStreamResponseError,  # JetStream did not answer a publish
    nats.errors.TimeoutError,  # no reply in time: a server busy, or a stream without a leader
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionDrainingError,
    nats.errors.OutboundBufferLimitError,  # reconnecting, with the pending buffer full
)


def unavailable(exc: BaseException, what: str) -> ApiError:
    """The ApiError for a TRANSIENT failure of ``what`` (e.g. "vmis/testvm")."""
    why = getattr(exc, "description", None) or str(exc) or type(exc).__name__
    return ApiError(Code.UNAVAILABLE, f"NATS did not answer for {what}: {why}; try again")


class Answering:
    """``with Answering(bucket, key):`` a TRANSIENT failure inside leaves as ``unavailable``; any
    other exception leaves as it came, so the caller's own ``except`` clauses still see nats-py's.
    A class, not a generator context manager: the store's every read and write passes here."""

    __slots__ = ("_bucket", "_key")

    def __init__(self, bucket: str, key: str) -> None:
        self._bucket, self._key = bucket, key

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if isinstance(exc, TRANSIENT):
            raise unavailable(exc, f"{self._bucket}/{self._key}") from None
