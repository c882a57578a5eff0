"""Does KVM really run a guest here? /dev/kvm can exist and still not (nested setups, sandboxes).

Seen on this project's machines (kvm_pvm): KVM runs a bare ``hlt``, SeaBIOS, BIOS calls and
protected mode, but a Linux kernel never prints a line. So the probe boots what a guest boots:
QEMU with accel=kvm, SeaBIOS, and a boot sector that calls the BIOS, enters protected mode, turns
on paging and long mode, and writes one byte to a debug port; then a Linux kernel, raced against the
same kernel under emulation. No byte within the timeout, or no kernel line until well after emulation
printed one: guests run under TCG here, as with KubeVirt's useEmulation.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

_OK = b"K"
# How long after emulation KVM may print a kernel's first line and still be chosen. Under KVM it
# comes in a fraction of a second; under TCG in ~0.4 s here; on this project's machines, where KVM
# boots no kernel, after ~40 s.
KVM_GRACE_S = 3.0
_LOAD = 0x7C00
_GDTR_AT, _GDT_AT = 0x80, 0x90
# null, flat 32-bit code (0x08), flat data (0x10), 64-bit code (0x18)
_GDT = (bytes(8) + bytes([0xFF, 0xFF, 0, 0, 0, 0x9A, 0xCF, 0]) + bytes([0xFF, 0xFF, 0, 0, 0, 0x92, 0xCF, 0])
        + bytes([0xFF, 0xFF, 0, 0, 0, 0x9A, 0xAF, 0]))

_REAL_MODE = [
    0xB4, 0x0E, 0xB0, 0x2E, 0xCD, 0x10,  # mov ah,0x0e; mov al,'.'; int 0x10 (a BIOS call)
    0xFA,  # cli
    0x0F, 0x01, 0x16, *(_LOAD + _GDTR_AT).to_bytes(2, "little"),  # lgdt [gdtr]
    0x0F, 0x20, 0xC0, 0x0C, 0x01, 0x0F, 0x22, 0xC0,  # mov eax,cr0; or al,1; mov cr0,eax
]
_PROTECTED_MODE = [  # identity-map 2 MiB (PML4 0x1000, PDPT 0x2000, PD 0x3000), then long mode
    0xBF, 0x00, 0x10, 0x00, 0x00, 0x31, 0xC0, 0xB9, 0x00, 0x0C, 0x00, 0x00, 0xF3, 0xAB,  # clear 12 KiB
    0xC7, 0x05, 0x00, 0x10, 0x00, 0x00, 0x03, 0x20, 0x00, 0x00,  # PML4[0] = PDPT | present | rw
    0xC7, 0x05, 0x00, 0x20, 0x00, 0x00, 0x03, 0x30, 0x00, 0x00,  # PDPT[0] = PD | present | rw
    0xC7, 0x05, 0x00, 0x30, 0x00, 0x00, 0x83, 0x00, 0x00, 0x00,  # PD[0] = 2 MiB page at 0
    0x0F, 0x20, 0xE0, 0x83, 0xC8, 0x20, 0x0F, 0x22, 0xE0,  # cr4 |= PAE
    0xB8, 0x00, 0x10, 0x00, 0x00, 0x0F, 0x22, 0xD8,  # cr3 = 0x1000
    0xB9, 0x80, 0x00, 0x00, 0xC0, 0x0F, 0x32, 0x0D, 0x00, 0x01, 0x00, 0x00, 0x0F, 0x30,  # EFER |= LME
    0x0F, 0x20, 0xC0, 0x0D, 0x00, 0x00, 0x00, 0x80, 0x0F, 0x22, 0xC0,  # cr0 |= PG
]
_LONG_MODE = [0xB0, _OK[0], 0xE6, 0xE9, 0xF4, 0xEB, 0xFD]  # mov al,'K'; out 0xe9,al; hlt; jmp $-1


def boot_disk() -> bytes:
    """A 1 MiB disk (SeaBIOS won't boot less than a cylinder) whose boot sector does what a
    Linux boot does: a BIOS call, protected mode, paging and long mode; then writes "K" to port 0xe9."""
    pm_at = _LOAD + len(_REAL_MODE) + 5
    lm_at = pm_at + len(_PROTECTED_MODE) + 7
    code = bytes([*_REAL_MODE, 0xEA, *pm_at.to_bytes(2, "little"), 0x08, 0x00,  # jmp 0x08:pm
                  *_PROTECTED_MODE, 0xEA, *lm_at.to_bytes(4, "little"), 0x18, 0x00,  # jmp 0x18:lm
                  *_LONG_MODE])
    sector = bytearray(512)
    sector[: len(code)] = code
    sector[_GDTR_AT: _GDTR_AT + 6] = (len(_GDT) - 1).to_bytes(2, "little") + (_LOAD + _GDT_AT).to_bytes(4, "little")
    sector[_GDT_AT: _GDT_AT + len(_GDT)] = _GDT
    sector[510:] = b"\x55\xaa"
    return bytes(sector).ljust(2**20, b"\0")


def _qemu(qemu: str, accel: str, tmp: str, name: str, args: list[str]) -> tuple[subprocess.Popen[bytes], Path]:
    """QEMU started with its debug/serial output into the file ``tmp/name``."""
    out = Path(tmp, name)
    proc = subprocess.Popen(
        [qemu, "-machine", f"q35,accel={accel}", "-m", "64", "-nodefaults", "-display", "none", "-no-reboot",
         "-chardev", f"file,id=out,path={out}", *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return proc, out


def _shows(out: Path, marker: bytes) -> bool:
    try:
        return marker in out.read_bytes()
    except FileNotFoundError:
        return False


def _ended(proc: subprocess.Popen[bytes]) -> list[str]:
    """The lines with "error" in what a QEMU we ended said."""
    proc.kill()
    said = (proc.communicate()[0] or b"").decode(errors="replace").strip().splitlines()
    return [line for line in said if "error" in line.lower()]


def _boots(qemu: str, args: list[str], marker: bytes, timeout: float,
           race: bool = False, grace: float = 0.0) -> tuple[bool, str]:
    """Run QEMU under KVM until marker shows on its output, or timeout. With ``race``, the same
    guest also runs under emulation (TCG), and KVM loses once emulation has shown
    the marker ``grace`` seconds before it: a KVM slower than emulation is no use to a guest, and
    waiting out the whole timeout cost each first node start here ~15 s of a spinning core."""
    with tempfile.TemporaryDirectory(prefix="virtbus-kvmprobe-") as tmp:
        kvm, out = _qemu(qemu, "kvm", tmp, "kvm.out", args)
        tcg, tcg_out = _qemu(qemu, "tcg", tmp, "tcg.out", args) if race else (None, None)
        start = time.monotonic()
        tcg_at: float | None = None
        verdict: tuple[bool, str] | None = None
        try:
            while verdict is None and time.monotonic() < start + timeout and kvm.poll() is None:
                if _shows(out, marker):
                    verdict = True, "ok"
                elif tcg_out is not None and tcg_at is None and _shows(tcg_out, marker):
                    tcg_at = time.monotonic()
                elif tcg_at is not None and time.monotonic() > tcg_at + grace:
                    verdict = False, (f"emulation showed it in {tcg_at - start:.1f}s; KVM had not "
                                      f"{grace:.0f}s later")
                else:
                    time.sleep(0.05)
        finally:
            errors = _ended(kvm)
            if tcg is not None:
                _ended(tcg)
        if verdict is not None:
            return verdict
        return False, errors[0] if errors else f"no sign of life within {timeout:.0f}s"


def probe_kernel() -> Path | None:
    kernels = sorted(Path("/boot").glob("vmlinuz-*"))
    return kernels[-1] if kernels else None


def kvm_runs_guests(kernel: Path | None = None, timeout: float = 12.0, grace: float = KVM_GRACE_S,
                    qemu: str = "qemu-system-x86_64") -> tuple[bool, str]:
    """(works, why). Never raises. With a kernel (or the host's own in /boot) it also boots that."""
    if not os.path.exists("/dev/kvm"):
        return False, "/dev/kvm does not exist"
    if shutil.which(qemu) is None:
        return False, f"{qemu} is not installed"
    with tempfile.TemporaryDirectory(prefix="virtbus-kvmprobe-") as tmp:
        disk = Path(tmp, "boot.img")
        disk.write_bytes(boot_disk())
        ok, why = _boots(qemu, ["-drive", f"file={disk},format=raw,if=ide",
                                "-device", "isa-debugcon,iobase=0xe9,chardev=out"], _OK, timeout)
    if not ok:
        return False, f"KVM does not run a boot sector here ({why})"
    kernel = kernel or probe_kernel()
    if kernel is None:
        return True, "a boot sector ran under KVM (no kernel to try)"
    boot = ["-kernel", str(kernel), "-append", "console=ttyS0 panic=-1", "-serial", "chardev:out"]
    ok, why = _boots(qemu, boot, b"Linux version", timeout, race=True, grace=grace)
    if not ok:
        return False, f"KVM does not boot a Linux kernel here ({why})"
    return True, f"{kernel.name} booted under KVM"


def kernel_identity(kernel: Path | None) -> str:
    """What a verdict about booting ``kernel`` depends on: its bytes, not its path. The lab passes
    the guest's copy of its kernel, whose directory changes whenever the guest is rebuilt around the
    same kernel; each change cost a new probe (16 s and a spinning core per handler on a host like
    this project's, where KVM prints a kernel's first line only after ~40 s)."""
    if kernel is None:
        return "none"
    try:
        return "sha256:" + hashlib.sha256(kernel.read_bytes()).hexdigest()
    except OSError:
        return f"unreadable:{kernel}"


def _saved(cache: Path, key: dict[str, str]) -> tuple[bool, str] | None:
    try:
        saved = json.loads(cache.read_text())
        if saved["key"] == key:
            return bool(saved["works"]), str(saved["why"]) + " (cached)"
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def cached_kvm_runs_guests(kernel: Path | None, cache: Path,
                           probe: Callable[[Path | None], tuple[bool, str]] = kvm_runs_guests) -> tuple[bool, str]:
    """The probe's verdict, remembered until the next boot of this host (it takes seconds) for the
    same kernel (``kernel_identity``)."""
    key = {"boot_id": Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
           "kernel": kernel_identity(kernel or probe_kernel())}
    cached = _saved(cache, key)
    if cached is not None:
        return cached
    cache.parent.mkdir(parents=True, exist_ok=True)
    # One probe per host at a time: the lab's handlers start together, and each probe spins a core
    # (two of them, racing), so the second handler waits for the first's verdict and reads it.
    with open(cache.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cached = _saved(cache, key)
        if cached is not None:
            return cached
        works, why = probe(kernel)
        tmp = cache.with_suffix(f".{os.getpid()}")
        tmp.write_text(json.dumps({"key": key, "works": works, "why": why}))
        tmp.rename(cache)
    return works, why


if __name__ == "__main__":
    import sys

    print(kvm_runs_guests(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
