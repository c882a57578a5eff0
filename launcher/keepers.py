"""A launcher's keepers as one: its power (launcher.power), its hotplugged volumes (launcher.hotplug)
and its volumes' sizes (launcher.volumegrowth). Each is told what its VMI now wants; all stand down
together once it ends or is stopping, and all look again when the domain changed under them (a domain
event, or libvirtd restarted). The runner deals with them as one, so a keeper added here is wired once."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from launcher.hotplug import DiskControl, HotplugKeeper
from launcher.hotplug import Report as VolumesReport
from launcher.hotplugplan import READY_REASON
from launcher.power import Note, PowerControl, PowerKeeper
from launcher.powerplan import Wanted
from launcher.volumegrowth import SizeControl, VolumeGrower
from launcher.volumerecords import VolumeRecords
from proto.nodeapi import EventNote
from proto.state import VMI


class Keepers:
    def __init__(self, power: PowerControl, disks: DiskControl, sizes: SizeControl, records: VolumeRecords,
                 domain: Callable[[], Any], *, note: Note, report_volumes: VolumesReport,
                 volume_ready: Callable[[], None], node: str, volumes_dir: Path) -> None:
        """domain: the domain on libvirtd's current connection (None until it runs); volume_ready: a
        hotplugged volume was attached (a snapshot may wait for it, launcher.backup)."""
        self.power = PowerKeeper(power, domain, note)
        # its hotplugged volumes (virtctl addvolume/removevolume), attached and detached as its spec says
        self.hotplug = HotplugKeeper(disks, records, domain, report_volumes, self._volume_event, node=node,
                                     volumes_dir=volumes_dir)
        # its volumes grown under the guest when resized while it runs (KubeVirt's ExpandDisks)
        self.growth = VolumeGrower(sizes, records, domain, note)
        self._note = note
        self._volume_ready = volume_ready

    def want(self, vmi: VMI) -> None:
        self.power.want(Wanted.of(vmi))
        self.hotplug.want(vmi.spec)
        self.growth.want(vmi.spec)

    def stand_down(self) -> None:
        self.power.stand_down()
        self.hotplug.stand_down()
        self.growth.stand_down()

    def poke(self) -> None:
        self.power.poke()
        self.hotplug.poke()
        self.growth.poke()

    def runs(self) -> list[Coroutine[Any, Any, None]]:
        return [self.power.run(), self.hotplug.run(), self.growth.run()]

    async def _volume_event(self, note: EventNote) -> None:
        if note.reason == READY_REASON:  # attached at its file's size: grown now if its record asks more
            self.growth.poke()
            self._volume_ready()
        await self._note(note)
