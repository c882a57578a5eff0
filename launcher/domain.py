"""Domain XML from a VM spec, pure: a plan of values, then small configurators (KubeVirt style),
each adding one concern to the ``<domain>``. Adding a device is adding a configurator.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from proto.machine import SMBIOS_SYSTEM, firmware_uuid
from proto.quantity import parse_bytes
from proto.spec import Clock, CloudInitConfigDrive, CloudInitNoCloud, Features, Input, VMSpec


@dataclass(frozen=True)
class DiskPlan:
    name: str
    path: str
    format: Literal["qcow2", "raw"]
    bus: str
    target: str
    readonly: bool
    boot_order: int | None
    device: Literal["disk", "cdrom"] = "disk"
    serial: str | None = None
    cache: str | None = None
    io: str | None = None
    unit: int | None = None  # its LUN on the SCSI controller's target 0; None: libvirt's choice (launcher.hotplug)


@dataclass(frozen=True)
class NicPlan:
    name: str
    tap: str
    mac: str
    model: str


@dataclass(frozen=True)
class DomainPlan:
    name: str
    uuid: str
    domain_type: Literal["kvm", "qemu"]
    memory_bytes: int
    sockets: int
    cores: int
    threads: int
    disks: tuple[DiskPlan, ...]
    nics: tuple[NicPlan, ...]
    serial_log: str
    serial_number: str | None = None  # SMBIOS's, not the serial port's
    clock: Clock = Clock()
    features: Features = Features()
    rng: bool = False
    inputs: tuple[Input, ...] = ()
    graphics: bool = True
    mem_balloon: bool = False
    # a virtio-scsi controller for volumes hotplugged while it runs (KubeVirt's, unless disableHotplug)
    hotplug: bool = True

    @property
    def vcpus(self) -> int:
        return self.sockets * self.cores * self.threads


def stable_mac(uid: str, interface: str) -> str:
    """A locally administered unicast MAC, the same for the same instance and interface."""
    digest = hashlib.sha256(f"{uid}/{interface}".encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


_TARGET_PREFIX = {"virtio": "vd", "sata": "sd", "scsi": "sd"}


def plan_domain(spec: VMSpec, *, uid: str, domain_type: Literal["kvm", "qemu"],
                disk_paths: dict[str, tuple[str, str]], taps: dict[str, str], serial_log: str,
                macs: dict[str, str] | None = None) -> DomainPlan:
    volumes = {v.name: v for v in spec.volumes}
    counters: dict[str, int] = {}
    disks = []
    for disk in spec.disks:
        prefix = _TARGET_PREFIX[disk.bus]
        index = counters.get(prefix, 0)
        counters[prefix] = index + 1
        path, fmt = disk_paths[disk.name]
        disks.append(DiskPlan(
            name=disk.name, path=path, format="qcow2" if fmt == "qcow2" else "raw", bus=disk.bus,
            target=prefix + chr(ord("a") + index),
            readonly=disk.readonly or disk.device == "cdrom"
            or isinstance(volumes[disk.name].source, CloudInitNoCloud | CloudInitConfigDrive),
            boot_order=disk.boot_order, device=disk.device, serial=disk.serial, cache=disk.cache, io=disk.io))
    # Boot order is per device (libvirt refuses it beside <os><boot dev=.../>): as the user gave it,
    # else the first disk, as KubeVirt leaves it to the firmware's first disk
    if disks and all(d.boot_order is None for d in disks):
        disks[0] = DiskPlan(**{**disks[0].__dict__, "boot_order": 1})
    macs = macs or {}
    nics = tuple(NicPlan(name=i.name, tap=taps[i.name], model=i.model,
                         mac=macs.get(i.name) or i.mac_address or stable_mac(uid, i.name)) for i in spec.interfaces)
    return DomainPlan(name=spec.name, uuid=firmware_uuid(spec), domain_type=domain_type,
                      memory_bytes=parse_bytes(spec.memory),
                      sockets=spec.cpu.sockets, cores=spec.cpu.cores, threads=spec.cpu.threads,
                      disks=tuple(disks), nics=nics, serial_log=serial_log,
                      serial_number=spec.firmware.serial if spec.firmware else None,
                      clock=spec.clock or Clock(), features=spec.features or Features(), rng=spec.rng,
                      inputs=tuple(spec.inputs), graphics=spec.graphics, mem_balloon=spec.mem_balloon,
                      hotplug=not spec.disable_hotplug)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def configure_compute(plan: DomainPlan, dom: ET.Element) -> None:
    _sub(dom, "name", plan.name)
    _sub(dom, "uuid", plan.uuid)
    _sub(dom, "memory", str(-(-plan.memory_bytes // 1024)), unit="KiB")
    _sub(dom, "vcpu", str(plan.vcpus), placement="static")
    # The guest's vCPU threads at SCHED_IDLE from their start: libvirt sets it before the guest first
    # runs, while QEMU is still among the node's launches (the launcher moves it to the guests' CPU
    # group only once the domain runs, launcher.priority). There a booting vCPU took a launch's share.
    tune = _sub(dom, "cputune")
    _sub(tune, "vcpusched", vcpus=f"0-{plan.vcpus - 1}", scheduler="idle")
    if plan.domain_type == "kvm":
        cpu = _sub(dom, "cpu", mode="host-passthrough")
    else:
        cpu = _sub(dom, "cpu", mode="custom", match="exact")
        _sub(cpu, "model", "qemu64", fallback="allow")
    _sub(cpu, "topology", sockets=str(plan.sockets), cores=str(plan.cores), threads=str(plan.threads))
    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine="q35")
    # the guest's SMBIOS system table (dmidecode): the VM's UUID, and its serial number if it has one
    _sub(os_el, "smbios", mode="sysinfo")
    system = _sub(_sub(dom, "sysinfo", type="smbios"), "system")
    entries = {**SMBIOS_SYSTEM, "uuid": plan.uuid}
    if plan.serial_number is not None:
        entries["serial"] = plan.serial_number
    for key, value in entries.items():
        _sub(system, "entry", value, name=key)


# QEMU's TCG keeps translated guest code in a cache it sizes at 1 GiB by default and fills as the guest
# runs: 36 MiB of an idle test guest's QEMU (PSS) was that cache. A bounded one is flushed and refilled
# when full, which costs CPU only while the guest runs more code than fits. QEMU backs it with huge
# pages, so it is resident whole once the guest has filled it: 16 MiB were, in every idle test guest.
# Each MiB of it is a MiB of every guest's QEMU, and what a smaller one costs is boot CPU: the test
# guest's boot outgrows it and QEMU translates the same code again. 6 MiB: in plain QEMU the test guest
# reached its marker 1.12-1.13 s after QEMU started with 4 MiB, 0.94 s with 6, 0.79-0.81 s with 8, for
# 75.6-75.9, 77.7-78.1 and 80.3-80.5 MiB of QEMU's PSS. With 6 a VM still takes less than the 48 MiB
# beyond its guest RAM we hold it to (bench/density.py: 45.7 MiB a VM with 150 up); with 8 it would not.
TCG_TB_CACHE_MIB = 6


def configure_features(plan: DomainPlan, dom: ET.Element) -> None:
    features = _sub(dom, "features")
    for name, on in (("acpi", plan.features.acpi), ("apic", plan.features.apic)):
        if on:
            _sub(features, name)
    if plan.features.smm:
        _sub(features, "smm", state="on")
    if plan.domain_type == "qemu":
        tcg = _sub(features, "tcg")
        _sub(tcg, "tb-cache", str(TCG_TB_CACHE_MIB), unit="MiB")
    configure_clock(plan.clock, dom)
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")


def configure_clock(clock: Clock, dom: ET.Element) -> None:
    """The RTC's base as KubeVirt sets it: UTC, reset at each start or moved by the VM's offset, or the
    local time of a time zone (libvirt gives QEMU that zone; the guest reads its RTC as UTC)."""
    if clock.timezone is not None:
        el = _sub(dom, "clock", offset="timezone", timezone=clock.timezone)
    else:
        adjustment = "reset" if clock.offset_seconds is None else str(clock.offset_seconds)
        el = _sub(dom, "clock", offset="utc", adjustment=adjustment)
    for timer in clock.timers:
        attrs = {"name": timer.name, "present": "yes" if timer.present else "no"}
        if timer.tick_policy is not None:
            attrs["tickpolicy"] = timer.tick_policy
        if timer.track is not None:
            attrs["track"] = timer.track
        _sub(el, "timer", **attrs)


def configure_storage(plan: DomainPlan, devices: ET.Element) -> None:
    if plan.hotplug or any(d.bus == "scsi" for d in plan.disks):
        # libvirt's default SCSI controller on x86 is an LSI one QEMU may not even build; KubeVirt
        # uses virtio-scsi too, and has one unless hotplug is disabled: hotplugged volumes come and
        # go on it (launcher.hotplug)
        _sub(devices, "controller", type="scsi", index="0", model="virtio-scsi")
    for d in plan.disks:
        devices.append(disk_element(d))


DISK_ALIAS_PREFIX = "ua-"  # libvirt's user aliases: each disk is found again by its volume's name


def disk_element(d: DiskPlan) -> ET.Element:
    """One ``<disk>``: at boot in the domain, or alone for a hotplug (launcher.hotplug)."""
    disk = ET.Element("disk", type="file", device=d.device)
    driver = _sub(disk, "driver", name="qemu", type=d.format)
    for key, value in (("cache", d.cache), ("io", d.io)):
        if value is not None:
            driver.set(key, value)
    _sub(disk, "source", file=d.path)
    _sub(disk, "target", dev=d.target, bus=d.bus)
    if d.serial is not None:
        _sub(disk, "serial", d.serial)
    if d.readonly:
        _sub(disk, "readonly")
    if d.boot_order is not None:
        _sub(disk, "boot", order=str(d.boot_order))
    _sub(disk, "alias", name=f"{DISK_ALIAS_PREFIX}{d.name}")
    if d.unit is not None:
        _sub(disk, "address", type="drive", controller="0", bus="0", target="0", unit=str(d.unit))
    return disk


def disk_xml(d: DiskPlan) -> str:
    return ET.tostring(disk_element(d), encoding="unicode")


def configure_network(plan: DomainPlan, devices: ET.Element) -> None:
    for n in plan.nics:
        nic = _sub(devices, "interface", type="ethernet")
        _sub(nic, "target", dev=n.tap, managed="no")
        _sub(nic, "mac", address=n.mac)
        _sub(nic, "model", type=n.model)
        # no PXE option ROM: nothing boots from the network (no NIC has a boot order), and each
        # NIC's ROM is memory in every QEMU and a scan in every boot
        _sub(nic, "rom", enabled="no")
        _sub(nic, "alias", name=f"ua-{n.name}")


CONSOLE_SOCKET = "/var/lib/libvirt/console.sock"  # in the launcher's private tmpfs; short for sun_path


def configure_console(plan: DomainPlan, devices: ET.Element) -> None:
    """The serial port on a unix socket the launcher holds (keystrokes in, output drained), and
    everything it prints in a log file the launcher publishes."""
    serial = _sub(devices, "serial", type="unix")
    _sub(serial, "source", mode="bind", path=CONSOLE_SOCKET)
    _sub(serial, "log", file=plan.serial_log, append="on")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="unix")
    _sub(console, "source", mode="bind", path=CONSOLE_SOCKET)
    _sub(console, "target", type="serial", port="0")


VNC_SOCKET = "/var/lib/libvirt/vnc.sock"  # beside the console's; never a TCP port (launcher/vnc.py serves it)
# The VGA card's memory: text mode and SeaBIOS use a few KiB of it, and 1 MiB still holds 1024x768 at
# 8 bits. QEMU's default 16 MiB took a 2 MiB huge page in every guest.
VGA_VRAM_KIB = 1024


def configure_graphics(plan: DomainPlan, devices: ET.Element) -> None:
    """A screen: QEMU's VNC server on a unix socket only the launcher reaches, and a VGA card
    (SeaBIOS and the guest's VGA text console both draw on it under TCG); none for a VM that asked for
    none (KubeVirt's autoattachGraphicsDevice: false), which has only its serial console."""
    if not plan.graphics:
        _sub(_sub(devices, "video"), "model", type="none")
        return
    graphics = _sub(devices, "graphics", type="vnc")
    _sub(graphics, "listen", type="socket", socket=VNC_SOCKET)
    video = _sub(devices, "video")
    _sub(video, "model", type="vga", vram=str(VGA_VRAM_KIB), heads="1", primary="yes")


def configure_panic(plan: DomainPlan, devices: ET.Element) -> None:
    """A pvpanic device: a guest's kernel panic reaches libvirt (CRASHED/PANICKED, and on_crash
    destroys the domain), so a crashed guest ends Failed with that reason instead of hanging."""
    _sub(devices, "panic", model="isa")


def configure_rng(plan: DomainPlan, devices: ET.Element) -> None:
    """KubeVirt's ``rng: {}``: a virtio-rng device fed from the host's /dev/urandom (as KubeVirt feeds it),
    for guests whose boot waits on entropy."""
    if plan.rng:
        rng = _sub(devices, "rng", model="virtio")
        _sub(rng, "backend", "/dev/urandom", model="random")
        _sub(rng, "alias", name="ua-rng")


def configure_inputs(plan: DomainPlan, devices: ET.Element) -> None:
    """KubeVirt's inputs: tablets, on virtio or on USB (an xHCI controller, only then: below)."""
    for device in plan.inputs:
        _sub(_sub(devices, "input", type=device.type, bus=device.bus), "alias", name=f"ua-{device.name}")


def configure_quiet_devices(plan: DomainPlan, devices: ET.Element) -> None:
    # no USB controller (and its memory and polling) unless a USB device needs one
    usb = any(device.bus == "usb" for device in plan.inputs)
    _sub(devices, "controller", type="usb", model="qemu-xhci" if usb else "none")
    # no balloon unless asked: the guest's memory stays its own, and there is no device to poll
    _sub(devices, "memballoon", model="virtio" if plan.mem_balloon else "none")


DOMAIN_CONFIGURATORS: list[Callable[[DomainPlan, ET.Element], None]] = [configure_compute, configure_features]
DEVICE_CONFIGURATORS: list[Callable[[DomainPlan, ET.Element], None]] = [
    configure_storage, configure_network, configure_console, configure_graphics, configure_panic, configure_rng,
    configure_inputs, configure_quiet_devices]


QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
ET.register_namespace("qemu", QEMU_NS)
# glibc gives each QEMU thread that allocates (vCPU, I/O, RCU, workers) an arena of its own; with two,
# an idle test guest's QEMU held 1.8 MiB less (its threads' arenas were mostly empty), with one 1.2 MiB
# less again (one vCPU under TCG: its threads allocate little, and seldom at once).
QEMU_MALLOC_ARENAS = "1"


# q35 builds an AHCI controller with six SATA ports and an SMBus controller into every machine, used
# or not, and libvirt has no setting for either. Without them QEMU's start faulted in ~450 pages fewer
# (1.7 MiB of its memory: the six ports' IDE buffers, and the address space each controller adds to every
# rebuild of the memory map), 7 % of the pages of QEMU's start, each a fresh page the launch pays for.
# A VM with a SATA disk or CD-ROM keeps the controller; nothing of ours uses the SMBus.
def machine_properties(plan: DomainPlan) -> str:
    """QEMU -machine properties libvirt has no element for: the q35 devices this VM does not use, off."""
    sata = any(d.bus == "sata" for d in plan.disks)
    return "smbus=off" if sata else "sata=off,smbus=off"


def configure_qemu_env(plan: DomainPlan, dom: ET.Element) -> None:
    """QEMU's environment and machine properties libvirt has no element for: libvirt starts QEMU with a
    clean environment, so only the domain can set it. QEMU merges a second -machine into the first."""
    commandline = _sub(dom, f"{{{QEMU_NS}}}commandline")
    _sub(commandline, f"{{{QEMU_NS}}}arg", value="-machine")
    _sub(commandline, f"{{{QEMU_NS}}}arg", value=machine_properties(plan))
    _sub(commandline, f"{{{QEMU_NS}}}env", name="MALLOC_ARENA_MAX", value=QEMU_MALLOC_ARENAS)


def compose_domain_xml(plan: DomainPlan) -> str:
    dom = ET.Element("domain", type=plan.domain_type)
    for configure in DOMAIN_CONFIGURATORS:
        configure(plan, dom)
    devices = _sub(dom, "devices")
    for configure in DEVICE_CONFIGURATORS:
        configure(plan, devices)
    configure_qemu_env(plan, dom)
    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode")
