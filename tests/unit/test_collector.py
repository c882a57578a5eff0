"""The cycle collector's pace in the scheduler and the handler: a burst that fills the caches runs few
collections, and garbage in cycles is still collected without anyone asking."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import pytest

from proto.spec import VMSpec
from proto.state import VMI
from servicekit import collector
from servicekit.store import decoder


@contextmanager
def paced(pace: Callable[[], None]) -> Iterator[list[int]]:
    """The generation of each collection run inside, under ``pace``; the process's pace put back after."""
    before = gc.get_threshold()
    runs: list[int] = []

    def seen(phase: str, info: dict[str, Any]) -> None:
        if phase == "stop":
            runs.append(info["generation"])

    gc.collect()  # a fresh start: no count left over from earlier tests
    pace()
    gc.callbacks.append(seen)
    try:
        yield runs
    finally:
        gc.callbacks.remove(seen)
        gc.set_threshold(*before)


def cpython_default() -> None:
    gc.set_threshold(700, 10, 10)


def fill_cache(count: int) -> dict[str, VMI]:
    """What a watch of ``vmis`` does as a burst arrives: decode each record and keep it."""
    raw = [msgspec.json.encode(VMI(name=f"vm-{i}", uid=f"u{i}", spec=VMSpec(name=f"vm-{i}", memory="64Mi"),
                                   created_at=0.0)) for i in range(count)]
    decode = decoder(VMI).decode
    return {f"vm-{i}": decode(data) for i, data in enumerate(raw)}


@pytest.mark.skipif(not gc.isenabled(), reason="the collector is off in this interpreter")
def test_a_burst_of_10000_vmis_runs_a_tenth_of_the_collections() -> None:
    with paced(cpython_default) as default_runs:
        kept = fill_cache(10_000)
    del kept
    with paced(collector.pace_for_caches) as paced_runs:
        kept = fill_cache(10_000)
    assert len(kept) == 10_000
    assert len(default_runs) >= 50  # each record keeps a few lists: ~100 young collections at 700
    assert len(paced_runs) * 10 <= len(default_runs)


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.mark.skipif(not gc.isenabled(), reason="the collector is off in this interpreter")
def test_garbage_in_cycles_is_still_collected_unasked() -> None:
    with paced(collector.pace_for_caches) as runs:
        first = Node()
        first.other = Node()
        first.other.other = first  # a cycle: reference counting alone never frees it
        gone = weakref.ref(first)
        del first
        churn: list[list[int]] = [[] for _ in range(collector.YOUNG * 2)]  # allocations enough for a young collection
        del churn
        assert runs, "no collection ran"
    assert gone() is None
