"""A stateful stand-in for launcher.libvirtd.PrivateLibvirtd, for unit tests of what drives it
(launcher.supervision, launcher.power): a libvirtd that can die, refuse to come back, and lose its
domain, and whose domains pause, resume and reboot, failing with the errors the real one raises."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt

from launcher.libvirtd import LibvirtdError
from launcher.lifecycle import CONNECTION_CLOSED


class FakeLibvirtd:
    def __init__(self, domains: dict[str, bool] | None = None) -> None:
        self.pid: int | None = 100
        self.domains = dict(domains or {})  # name -> active (QEMU runs)
        self.qemu_pids = {name: 1000 + i for i, name in enumerate(self.domains)}
        self.refuse_starts = 0  # restarts that fail, like a libvirtd giving no socket
        self.restarts = 0
        self.killed: list[int] = []
        self.paused: set[str] = set()
        self.reboots: list[str] = []
        self._callback: Callable[[str, str], None] | None = None

    # what a test does to it
    def emit(self, event: str, detail: str) -> None:
        assert self._callback is not None, "nobody watches"
        self._callback(event, detail)

    def die(self) -> None:
        """libvirtd SIGKILLed: the connection closes, its callbacks go with it; QEMU runs on."""
        callback, self._callback, self.pid = self._callback, None, None
        if callback is not None:
            callback(CONNECTION_CLOSED, "EOF")

    # the Hypervisor protocol
    def watch_lifecycle(self, callback: Callable[[str, str], None]) -> None:
        if self.pid is None:
            raise libvirt.libvirtError("internal error: client socket is closed")
        self._callback = callback

    async def restart(self, netns: str, workdir: Path) -> None:
        self.restarts += 1
        if self.refuse_starts > 0:
            self.refuse_starts -= 1
            raise LibvirtdError("libvirtd gave no socket within 30s: ")
        self.pid = 100 + self.restarts

    async def lookup(self, name: str) -> tuple[Any, bool]:
        if self.pid is None:
            raise libvirt.libvirtError("internal error: client socket is closed")
        if name not in self.domains:
            raise libvirt.libvirtError(f"Domain not found: no domain with matching name '{name}'")
        return name, self.domains[name]

    def kill_qemu(self, name: str) -> int | None:
        if not self.domains.get(name):
            return None
        self.domains[name] = False
        self.killed.append(self.qemu_pids[name])
        return self.qemu_pids[name]

    # the PowerControl protocol; a domain is its name here
    def _running(self, dom: Any) -> None:
        if self.pid is None:
            raise libvirt.libvirtError("internal error: client socket is closed")
        if not self.domains.get(dom):
            raise libvirt.libvirtError("Requested operation is not valid: domain is not running")

    def _emit_if_watched(self, event: str, detail: str) -> None:
        if self._callback is not None:
            self._callback(event, detail)

    async def is_paused(self, dom: Any) -> bool:
        self._running(dom)
        return dom in self.paused

    async def suspend(self, dom: Any) -> None:
        self._running(dom)
        if dom not in self.paused:  # libvirt says nothing of a pause of a paused domain
            self.paused.add(dom)
            self._emit_if_watched("SUSPENDED", "PAUSED")

    async def resume(self, dom: Any) -> None:
        self._running(dom)
        if dom not in self.paused:
            raise libvirt.libvirtError("Requested operation is not valid: domain is not paused")
        self.paused.discard(dom)
        self._emit_if_watched("RESUMED", "UNPAUSED")

    async def reboot(self, dom: Any) -> None:
        self._running(dom)
        self.reboots.append(dom)
