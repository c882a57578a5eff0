"""The node's volume files: a volume's file goes once its record is deleted and no instance here
uses it any more (a VM deleted with its dataVolumeTemplates: its instance is still stopping).

Files are named by volume and uid (servicekit.paths.volume_path), so a file whose record is gone,
or whose record now has another uid (deleted and made again), is garbage.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import structlog

from handler import nodevmis
from proto.spec import claims
from proto.state import FINAL_PHASES
from servicekit.informer import shared
from servicekit.paths import volume_file_id
from servicekit.store import Store

log = structlog.get_logger()
SWEEP_EVERY_S = 30.0


def garbage(files: list[Path], records: set[tuple[str, str]], in_use: set[str]) -> list[Path]:
    """Pure: the volume files to remove: no record of that name and uid, and no instance here using the name."""
    out = []
    for path in files:
        ident = volume_file_id(path)
        if ident is not None and ident not in records and ident[0] not in in_use:
            out.append(path)
    return out


class VolumeFiles:
    def __init__(self, store: Store, node: str, volumes_dir: Path) -> None:
        self.store = store
        self.node = node
        self.dir = volumes_dir
        self._wake = asyncio.Event()

    def kick(self) -> None:
        """Look again soon: an instance went, so a deleted volume it held may be free now."""
        self._wake.set()

    async def run(self) -> None:
        sweeping = asyncio.create_task(self._every())
        try:
            async for change in shared(self.store, self.store.volumes).changes():  # it rewatches by itself
                if change.value is None:
                    self.kick()
        finally:
            sweeping.cancel()

    async def _every(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.sweep()
            except Exception as exc:  # noqa: BLE001 - the next sweep tries again
                log.warning("volume sweep failed", error=str(exc) or type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), SWEEP_EVERY_S)

    async def sweep(self) -> list[Path]:
        files = await asyncio.to_thread(lambda: sorted(self.dir.glob("*.qcow2")) if self.dir.exists() else [])
        if not files:
            return []
        entries = await shared(self.store, self.store.volumes).items()
        records = {(e.value.name, e.value.uid) for e in entries}
        # a VM restore's old file stays until the new one is Ready (then previous_uid goes)
        records |= {(e.value.name, e.value.previous_uid) for e in entries if e.value.previous_uid is not None}
        # this node's VMI copies: a VMI bound here a moment ago may trail, but it uses a volume whose
        # record exists, and such a file is kept whatever uses it
        in_use = {name for vmi in await nodevmis.vmis_here(self.store, self.node)
                  if not (vmi.phase in FINAL_PHASES and vmi.torn_down) for _, name in claims(vmi.spec.volumes)}
        gone = garbage(files, records, in_use)
        for path in gone:
            await asyncio.to_thread(path.unlink, missing_ok=True)
            log.info("volume deleted; its file removed", file=path.name)
        return gone
