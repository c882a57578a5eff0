"""Launch slots: how many of a node's instances may be starting at once, the rest waiting their turn
in order of creation (pure; the agent keeps one and kicks what it says).

A launch is CPU work (a launcher's set-up, its libvirtd, QEMU's start) on the node's few cores. Run
all at once, as a burst of instances bound together would, they share the cores evenly and every one
of them finishes late (each of 100 launches on 2 cores took ~12 s to reach Running, the first as late
as the last). Taken a few at a time, oldest first, each finishes in a fraction of a second and the
others wait in line: the same work done, most instances Running much sooner. KubeVirt's virt-handler
has the same shape, a fixed number of workers over its queue of instances.

A slot is given back when its instance runs, ends or goes; a launch that holds one longer than
``hold_s`` (an image still downloading, a volume not ready yet) gives it up to the next in line and
goes on without it, so one slow launch cannot hold up the rest.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field


@dataclass
class LaunchSlots:
    size: int
    hold_s: float = 10.0
    _held: dict[str, float] = field(default_factory=dict)  # name -> when it took its slot
    _waiting: dict[str, float] = field(default_factory=dict)  # name -> when it was created

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"launch slots must be at least 1, not {self.size}")

    def take(self, name: str, created: float, now: float) -> bool:
        """True: ``name`` may launch now (it holds a slot until released or expired). False: it waits;
        ``release``/``expire`` name it when its turn comes, and it asks again then."""
        if name in self._held:
            return True
        self._waiting.setdefault(name, created)
        if name not in self.next_up():
            return False
        del self._waiting[name]
        self._held[name] = now
        return True

    def release(self, name: str) -> list[str]:
        """``name`` runs, ended, went, or no longer wants to launch here: its slot or its place in
        line is given up. Returns the waiting instances whose turn it is now (to be asked again)."""
        self._held.pop(name, None)
        self._waiting.pop(name, None)
        return self.next_up()

    def expire(self, now: float) -> list[str]:
        """Slots held longer than ``hold_s`` are given up (their launches go on without them).
        Returns the waiting instances whose turn it is now."""
        for name, since in list(self._held.items()):
            if now - since > self.hold_s:
                del self._held[name]
        return self.next_up()

    def next_up(self) -> list[str]:
        """The oldest waiting instances (by creation, then name), as many as there are free slots."""
        free = self.size - len(self._held)
        if free <= 0 or not self._waiting:
            return []
        return [name for _, name in heapq.nsmallest(free, ((c, n) for n, c in self._waiting.items()))]

    def holds(self, name: str) -> bool:
        return name in self._held

    def knows(self, name: str) -> bool:
        """It holds a slot or waits for one."""
        return name in self._held or name in self._waiting

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def clear(self) -> None:
        """Nothing held, nobody waiting (the handler stops)."""
        self._held.clear()
        self._waiting.clear()

    @property
    def busy(self) -> bool:
        """A launch holds a slot or waits for one: the node is launching."""
        return bool(self._held or self._waiting)
