"""High availability without two copies: the timing contract between a launcher and the control plane.

A VM that asks for it (``virtbus.io/high-availability: "true"``) is run again on another node when
its node is lost, and only once its old copy is certainly dead. Certainty comes from a lease, as
Proxmox HA's watchdog and sanlock give it: the launcher renews its lease (a KV entry, by
compare-and-set) every ``RENEW_EVERY_S``, and kills its own QEMU once no renewal sent in the last
``FENCE_AFTER_S`` seconds has been acknowledged. The control plane counts a lease lapsed once it has
seen no new revision of it for ``EXPIRE_AFTER_S`` seconds; only then does it fail the instance over.

Each side measures only its own monotonic clock, and both measure from the same renewal: the launcher
from when it *sent* it, the control plane from when it *saw* it, which is never earlier. So the
launcher's deadline always passes first, by at least ``EXPIRE_AFTER_S - FENCE_AFTER_S`` seconds,
whatever the wall clocks say. A lease once lapsed stays lapsed: a launcher that was frozen past its
deadline fences before it sends anything, and the control plane deletes the lapsed key so that a
renewal in flight fails its compare-and-set.
"""

from __future__ import annotations

from proto.errors import ApiError, Code
from proto.spec import RunStrategy

ANNOTATION = "virtbus.io/high-availability"
RENEW_EVERY_S = 1.0
FENCE_AFTER_S = 5.0
EXPIRE_AFTER_S = 8.0
# what may go wrong between the two clocks: scheduling delays of either process, the kill itself
MARGIN_S = EXPIRE_AFTER_S - FENCE_AFTER_S
# Only these restart a failed instance; with any other the VM would not run again elsewhere. Halted
# is allowed: a stopped VM may be started (which makes it Always).
FAILOVER_STRATEGIES = frozenset({RunStrategy.ALWAYS, RunStrategy.RERUN_ON_FAILURE, RunStrategy.HALTED})


def parse_annotation(value: object, path: str) -> bool:
    if value not in ("true", "false"):
        raise ApiError(Code.INVALID, f'{path} is "true" or "false", not {str(value)[:64]!r}', path)
    return value == "true"


def check_strategy(strategy: RunStrategy, path: str) -> None:
    if strategy not in FAILOVER_STRATEGIES:
        raise ApiError(Code.INVALID, f"a high-availability VM is run again after its node is lost, which "
                                     f"runStrategy {strategy.value} never does: use Always or RerunOnFailure", path)


def must_fence(last_acknowledged: float, now: float) -> bool:
    """Launcher: no renewal sent in the last FENCE_AFTER_S seconds was acknowledged."""
    return now - last_acknowledged > FENCE_AFTER_S


def time_left(last_acknowledged: float, now: float) -> float:
    """Launcher: how long a renewal sent now may take before it no longer matters."""
    return max(FENCE_AFTER_S - (now - last_acknowledged), 0.0)


def lapsed(silent_for: float) -> bool:
    """Control plane: it has seen no renewal for this long on its own monotonic clock."""
    return silent_for > EXPIRE_AFTER_S
