"""Events, as Kubernetes has them: what happened to which object, and why. Kept in a stream."""

from __future__ import annotations

import msgspec


class Event(msgspec.Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True):
    kind: str  # VirtualMachine | VirtualMachineInstance
    name: str
    reason: str  # SuccessfulCreate, Scheduled, FailedScheduling, Started, Stopped, Failed, Exposed, ...
    message: str
    timestamp: float
    type: str = "Normal"  # or Warning
    node: str | None = None
