"""Fair admission of a service's requests: a flood from one client never makes another client's
request wait behind it (Kubernetes' API Priority and Fairness, in miniature).

Up to ``running`` requests run at once. Beyond that, each client (a *flow*) has a queue of its own,
and a freed slot goes to the flows in turn, round robin, not to the oldest request. All flows
together hold at most ``waiting`` requests (one client may fill them: a bulk creator on one
connection keeps its requests in flight); a request beyond that is refused at once, which the
service answers as a retryable "busy". So a person asking in the middle
of a flood waits for one slot to free, not for the flood's whole backlog: on a 2-core box the old
single FIFO kept a person's ``vm get`` waiting 0.8-1.1 s behind 576 ``vm list``s, and 0.17-0.40 s
with turns (tests/integration/test_api_flood.py, the most of its five gets).

Pure: the caller runs what ``admit`` and ``done`` hand back (servicekit.endpoints).
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Admission(enum.Enum):
    RUN = "run"  # start it now
    QUEUED = "queued"  # ``done`` hands it back when its turn comes
    REFUSED = "refused"  # no room: answer busy


def flow_of(reply: str) -> str:
    """Who asks, from the reply subject. A NATS client's requests reply to ``<inbox>.<token>``,
    one inbox per connection (``_INBOX.<nuid>``, or a prefix of the user's own); a reply subject
    of two tokens or fewer is an inbox itself."""
    head, _, _ = reply.rpartition(".")
    return head if "." in head else reply


class FairQueue(Generic[T]):
    def __init__(self, running: int, waiting: int) -> None:
        if running < 1 or waiting < 0:
            raise ValueError("running must be at least 1; waiting at least 0")
        self.running_limit = running
        self.waiting_limit = waiting
        self.running = 0
        self.waiting = 0
        self._queues: dict[str, deque[T]] = {}
        self._turns: deque[str] = deque()  # flows with something waiting, in the order they are served

    def admit(self, flow: str, item: T) -> Admission:
        if self.running < self.running_limit:
            self.running += 1
            return Admission.RUN
        if self.waiting >= self.waiting_limit:
            return Admission.REFUSED
        queue = self._queues.get(flow)
        if queue is None:
            queue = self._queues[flow] = deque()
            self._turns.append(flow)
        queue.append(item)
        self.waiting += 1
        return Admission.QUEUED

    def done(self) -> T | None:
        """One that ran has finished: the next to run (it has the freed slot), or None."""
        if self.running <= 0:
            raise RuntimeError("done() without a running item")
        if not self._turns:
            self.running -= 1
            return None
        flow = self._turns.popleft()
        queue = self._queues[flow]
        item = queue.popleft()
        self.waiting -= 1
        if queue:
            self._turns.append(flow)  # its next waits for every other flow's turn
        else:
            del self._queues[flow]
        return item
