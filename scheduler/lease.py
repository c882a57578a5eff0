"""Pure leader election by a lease in KV (client-go's leaderelection, on a KV revision).

The holder renews the lease by compare-and-set on its revision. Nobody compares wall clocks: a
candidate notes on its own monotonic clock when it first saw the lease's current revision, and
may take it over (CAS on that revision) once it has stayed unchanged for the lease's duration.
The holder stops leading when it has not renewed within ``renew_deadline`` (less than the
duration) of the start of its last successful renewal, so it has stopped before anyone may start.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    duration: float = 3.0  # unchanged this long: the holder is gone
    renew_every: float = 1.0
    renew_deadline: float = 2.0  # the holder leads no longer than this after its last renewal began
    poll: float = 0.25

    def __post_init__(self) -> None:
        if not 0 < self.renew_every < self.renew_deadline < self.duration:
            raise ValueError("a lease needs 0 < renew_every < renew_deadline < duration")


@dataclass(frozen=True)
class View:
    """The lease as last read: its revision and holder, and when (monotonic) that revision was first seen."""

    revision: int | None
    holder: str | None
    duration: float
    first_seen: float


class Step(enum.Enum):
    CREATE = "create"  # no lease: create it
    RENEW = "renew"  # ours: renew it
    TAKE_OVER = "take-over"  # someone else's, unchanged for its whole duration
    WAIT = "wait"


def seen(previous: View | None, revision: int | None, holder: str | None, duration: float, now: float) -> View:
    """The view after a read at ``now``: a new revision restarts the count, the same one keeps it."""
    if previous is not None and previous.revision == revision:
        return previous
    return View(revision, holder, duration, now)


def step(view: View, me: str, now: float, last_renewed: float | None, timing: Timing) -> Step:
    if view.revision is None:
        return Step.CREATE
    if view.holder == me:
        due = last_renewed is None or now - last_renewed >= timing.renew_every
        return Step.RENEW if due else Step.WAIT
    if now - view.first_seen > view.duration:
        return Step.TAKE_OVER
    return Step.WAIT


def still_leading(last_renewed: float | None, now: float, timing: Timing) -> bool:
    return last_renewed is not None and now - last_renewed < timing.renew_deadline
