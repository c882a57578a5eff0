"""A VM's machine beyond its size, disks and NICs: the firmware's identity, the clock, the platform's
features and the devices around the guest (entropy, pointer, screen, balloon), as KubeVirt's
``domain.firmware``, ``domain.clock``, ``domain.features`` and ``domain.devices.{rng, inputs,
autoattachGraphicsDevice, autoattachMemBalloon}``. Read from the manifest's cleaned tree, checked, and
printed back; the launcher (launcher/domain.py) writes them into the domain.

What libvirt and QEMU do here under TCG is taken; what needs KVM (Hyper-V enlightenments, hidden KVM,
paravirtual spinlocks) or firmware the nodes do not have (UEFI, so Secure Boot too) is refused by path.
"""

from __future__ import annotations

import re
import uuid
import zoneinfo
from collections.abc import Mapping
from typing import Any, Literal

from proto.errors import ApiError, Code
from proto.schema import BOOL, EMPTY, INT, STR, Choice, ListOf, Object, Off, Refused
from proto.spec import Clock, Features, Firmware, Input, Timer, VMSpec

# KubeVirt's namespace for the UUID it gives a VM's firmware when the VM names none
# (virt-controller's CalculateLegacyUUID): the same VM name, the same UUID, in KubeVirt and here
FIRMWARE_UUID_NAMESPACE = uuid.UUID("6a1a24a1-4061-4607-8bf4-a3963d0c5895")
# what KubeVirt's default SMBIOS settings say of the machine, so a guest's checks read the same
SMBIOS_SYSTEM = {"manufacturer": "KubeVirt", "product": "None", "family": "KubeVirt"}
MAX_SERIAL = 64  # an SMBIOS string; serial numbers are far shorter
MAX_OFFSET_SECONDS = 100 * 366 * 24 * 3600  # a century either way: QEMU's -rtc base is a calendar date
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_SERIAL = re.compile(r"^[A-Za-z0-9 ._:/+-]+$")
_INPUT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_TIMEZONE = re.compile(r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$")
_KVM_ONLY = "it needs KVM, and virtbus places VMs on nodes without it too (TCG, KubeVirt's useEmulation)"
TICK_POLICIES: dict[str, tuple[str, ...]] = {  # per timer, what libvirt takes for it
    "rtc": ("delay", "catchup"), "pit": ("delay", "catchup", "discard"),
    "hpet": ("delay", "catchup", "merge", "discard"),
}
TimerName = Literal["rtc", "pit", "hpet", "kvmclock"]
# KubeVirt's key under clock.timer: libvirt's (and virtbus's) name of the timer
TIMER_KEYS: dict[str, TimerName] = {"rtc": "rtc", "pit": "pit", "hpet": "hpet", "kvm": "kvmclock"}

_FEATURE = Object({"enabled": BOOL})
FEATURES = Object({
    "acpi": _FEATURE, "apic": Object({"enabled": BOOL, "endOfInterrupt": Off()}), "smm": _FEATURE,
    "hyperv": Refused(f"Hyper-V enlightenments: {_KVM_ONLY}"),
    "hypervPassthrough": Refused(f"Hyper-V enlightenments: {_KVM_ONLY}"),
    "kvm": Refused(f"hiding KVM: {_KVM_ONLY}"), "pvspinlock": Refused(f"paravirtual spinlocks: {_KVM_ONLY}"),
})
FIRMWARE = Object({
    "uuid": STR, "serial": STR,
    "bootloader": Object({
        "bios": Object({"useSerial": Off()}),
        "efi": Refused("virtbus's nodes boot guests with SeaBIOS; they have no UEFI firmware (OVMF)"),
    }),
    "kernelBoot": Refused("virtbus's images are disks and ISOs, not container images holding a kernel; "
                          "boot the kernel from a disk"),
})
_TIMER = {"present": BOOL}
CLOCK = Object({
    "utc": Object({"offsetSeconds": INT}),
    "timezone": STR,
    "timer": Object({
        "rtc": Object({**_TIMER, "tickPolicy": Choice(TICK_POLICIES["rtc"]), "track": Choice(("guest", "wall"))}),
        "pit": Object({**_TIMER, "tickPolicy": Choice(TICK_POLICIES["pit"])}),
        "hpet": Object({**_TIMER, "tickPolicy": Choice(TICK_POLICIES["hpet"])}),
        "kvm": Object(_TIMER),
        "hyperv": Refused(f"the Hyper-V clock: {_KVM_ONLY}"),
    }),
})
MAX_INPUTS = 4
# the machine's part of domain.devices
MACHINE_DEVICES = {
    "rng": EMPTY,
    "inputs": ListOf(Object({"name": STR, "type": Choice(("tablet",)), "bus": Choice(("usb", "virtio"))})),
    "autoattachGraphicsDevice": BOOL, "autoattachMemBalloon": BOOL,
}


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(Code.INVALID, message, field)


# --- read: the cleaned KubeVirt tree (proto.schema walked it) to VMSpec fields


def read_machine(domain: Mapping[str, Any], path: str) -> dict[str, Any]:
    """VMSpec keyword arguments from a cleaned ``domain`` at ``path``: only what the manifest says."""
    out: dict[str, Any] = {}
    devices = domain.get("devices", {})
    if "rng" in devices:
        out["rng"] = True
    if "inputs" in devices:
        out["inputs"] = [Input(name=i.get("name", ""), type=i.get("type", "tablet"), bus=i.get("bus", "usb"))
                         for i in devices["inputs"]]
    for key, field in (("autoattachGraphicsDevice", "graphics"), ("autoattachMemBalloon", "mem_balloon")):
        if key in devices:
            out[field] = devices[key]
    if "firmware" in domain:
        firmware = domain["firmware"]
        out["firmware"] = Firmware(uuid=firmware.get("uuid"), serial=firmware.get("serial"))
    if "clock" in domain:
        out["clock"] = _clock(domain["clock"], f"{path}.clock")
    if "features" in domain:
        features = domain["features"]
        out["features"] = Features(acpi=features.get("acpi", {}).get("enabled", True),
                                   apic=features.get("apic", {}).get("enabled", True),
                                   smm=features.get("smm", {}).get("enabled", True) if "smm" in features else False)
    return out


def _clock(clock: Mapping[str, Any], path: str) -> Clock:
    if "utc" in clock and "timezone" in clock:
        raise _invalid(f"{path}.timezone", f"{path}.utc and {path}.timezone are mutually exclusive")
    timers = [Timer(name=TIMER_KEYS[key], present=body.get("present", True), tick_policy=body.get("tickPolicy"),
                    track=body.get("track")) for key, body in clock.get("timer", {}).items()]
    return Clock(offset_seconds=clock.get("utc", {}).get("offsetSeconds"), timezone=clock.get("timezone"),
                 timers=timers)


# --- check: the values, whichever way the spec came (KubeVirt YAML or virtbus JSON)


def check_machine(spec: VMSpec) -> None:
    """Raise Code.INVALID with the native field for a value libvirt would refuse or misread."""
    if spec.firmware is not None:
        if spec.firmware.uuid is not None and not _UUID.match(spec.firmware.uuid):
            raise _invalid("spec.firmware.uuid", f"firmware.uuid {spec.firmware.uuid!r} is not a UUID in its "
                                                 "canonical lower-case form (8-4-4-4-12 hex digits)")
        serial = spec.firmware.serial
        if serial is not None and (len(serial) > MAX_SERIAL or not _SERIAL.match(serial)):
            raise _invalid("spec.firmware.serial", f"firmware.serial is 1 to {MAX_SERIAL} letters, digits, "
                                                   "spaces and . _ : / + -")
    if spec.clock is not None:
        _check_clock(spec.clock)
    if len(spec.inputs) > MAX_INPUTS:
        raise _invalid("spec.inputs", f"a VM has at most {MAX_INPUTS} input devices")
    names: set[str] = set()
    for index, device in enumerate(spec.inputs):
        if not _INPUT_NAME.match(device.name) or device.name in names:
            raise _invalid(f"spec.inputs[{index}].name", f"spec.inputs[{index}].name {device.name!r} is not a unique "
                                                         "name of letters, digits and -")
        names.add(device.name)


def _check_clock(clock: Clock) -> None:
    if clock.offset_seconds is not None and clock.timezone is not None:
        raise _invalid("spec.clock.timezone", "clock.offsetSeconds and clock.timezone are mutually exclusive")
    if clock.offset_seconds is not None and abs(clock.offset_seconds) > MAX_OFFSET_SECONDS:
        raise _invalid("spec.clock.offsetSeconds", f"clock.offsetSeconds is at most {MAX_OFFSET_SECONDS} "
                                                   "either way (a century)")
    if clock.timezone is not None:
        _check_timezone(clock.timezone)
    seen: set[str] = set()
    for index, timer in enumerate(clock.timers):
        where = f"spec.clock.timers[{index}]"
        if timer.name in seen:
            raise _invalid(f"{where}.name", f"{where}: timer {timer.name!r} is given twice")
        seen.add(timer.name)
        allowed = TICK_POLICIES.get(timer.name, ())
        if timer.tick_policy is not None and timer.tick_policy not in allowed:
            raise _invalid(f"{where}.tickPolicy", f"{where}: the {timer.name} timer takes tickPolicy "
                                                  f"{' or '.join(allowed) or '(none)'}, not {timer.tick_policy!r}")
        if timer.track is not None and timer.name != "rtc":
            raise _invalid(f"{where}.track", f"{where}: only the rtc timer has track")


def _check_timezone(name: str) -> None:
    # the name reaches QEMU's environment (TZ): a zone of the tz database, nothing else
    if len(name) > 64 or not _TIMEZONE.match(name) or ".." in name:
        raise _invalid("spec.clock.timezone", f"clock.timezone {name!r} is not a time zone name such as Europe/Paris")
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise _invalid("spec.clock.timezone", f"clock.timezone {name!r} is not in the time zone database "
                                              "(such as Europe/Paris)") from None


# --- what the launcher and the printers share


def firmware_uuid(spec: VMSpec) -> str:
    """The guest's SMBIOS system UUID: the one the manifest gives, else one that is the VM's own for
    good (from its name, as KubeVirt makes it), so the guest sees the same machine on every start."""
    if spec.firmware is not None and spec.firmware.uuid is not None:
        return spec.firmware.uuid
    return str(uuid.uuid5(FIRMWARE_UUID_NAMESPACE, spec.name))


def machine_manifest(spec: VMSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """(domain fields, devices fields) in KubeVirt's form: what ``read_machine`` reads back as ``spec``'s."""
    domain: dict[str, Any] = {}
    if spec.firmware is not None:
        domain["firmware"] = {k: v for k, v in (("uuid", spec.firmware.uuid), ("serial", spec.firmware.serial))
                              if v is not None}
    if spec.clock is not None:
        clock: dict[str, Any] = {}
        if spec.clock.timezone is not None:
            clock["timezone"] = spec.clock.timezone
        elif spec.clock.offset_seconds is not None:
            clock["utc"] = {"offsetSeconds": spec.clock.offset_seconds}
        keys = {name: key for key, name in TIMER_KEYS.items()}
        if spec.clock.timers:
            clock["timer"] = {keys[t.name]: {"present": t.present,
                                             **({"tickPolicy": t.tick_policy} if t.tick_policy else {}),
                                             **({"track": t.track} if t.track else {})} for t in spec.clock.timers}
        domain["clock"] = clock
    if spec.features is not None:
        domain["features"] = {"acpi": {"enabled": spec.features.acpi}, "apic": {"enabled": spec.features.apic},
                              **({"smm": {"enabled": True}} if spec.features.smm else {})}
    devices: dict[str, Any] = {"rng": {}} if spec.rng else {}
    if spec.inputs:
        devices["inputs"] = [{"name": i.name, "type": i.type, "bus": i.bus} for i in spec.inputs]
    if not spec.graphics:
        devices["autoattachGraphicsDevice"] = False
    if spec.mem_balloon:
        devices["autoattachMemBalloon"] = True
    return domain, devices
