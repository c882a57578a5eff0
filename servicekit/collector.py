"""The cycle collector's pace in a service that caches the cluster's state (the scheduler, a handler).

CPython runs a young collection every 700 net allocations of container objects, and every tenth of
those a collection of the middle generation too. Each collection walks every object still alive in
the generations it collects. A burst that fills the caches keeps nearly everything it allocates, so
almost every collection walks objects that are not garbage. In the 1,000-node, 10,000-VMI burst
(bench/hollow_nodes.py) that was 20 % of the scheduler's CPU and 21 % of each hollow worker's
(CPU time inside the collections, measured with ``gc.callbacks``).

A young generation of 20,000 cut both to 3-5 %. Garbage that is not in a cycle is still freed at
once by reference counting, so this only holds cyclic garbage longer: at most 20,000 new objects
between two collections, a few MiB. A launcher keeps CPython's pace: it allocates little once its
domain runs, and its memory is overhead on every VM.
"""

from __future__ import annotations

import gc

YOUNG = 20_000  # container objects allocated between two young collections (CPython: 700)
MIDDLE = 10  # young collections per collection of the middle generation (CPython's)
OLD = 10  # middle collections per full one, which CPython also defers until 25 % more survived


def pace_for_caches() -> None:
    """Call once, as the service starts."""
    gc.set_threshold(YOUNG, MIDDLE, OLD)
