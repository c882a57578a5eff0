"""The binder's queue of VMIs to decide: each once, the highest priority first (kube-scheduler's active
queue orders pods by priority too), in the order they were queued within a priority."""

from __future__ import annotations

import itertools


class PendingQueue:
    def __init__(self) -> None:
        self._levels: dict[int, dict[str, None]] = {}  # priority -> names, in the order queued
        self._queued: dict[str, int] = {}  # name -> its priority

    def __bool__(self) -> bool:
        return bool(self._queued)

    def __len__(self) -> int:
        return len(self._queued)

    def __contains__(self, name: object) -> bool:
        return name in self._queued

    def add(self, name: str, priority: int = 0) -> None:
        """Queue ``name``; one queued already keeps its place."""
        if name not in self._queued:
            self._queued[name] = priority
            self._levels.setdefault(priority, {})[name] = None

    def take(self, count: int) -> list[str]:
        """Up to ``count`` names off the front, out of the queue."""
        out: list[str] = []
        for priority in sorted(self._levels, reverse=True):
            level = self._levels[priority]
            names = list(itertools.islice(level, count - len(out)))
            for name in names:
                del level[name], self._queued[name]
            out += names
            if not level:
                del self._levels[priority]
            if len(out) >= count:
                break
        return out
