"""Does KVM really run a guest here? /dev/kvm can exist and still not (nested, sandboxes).

The probe creates a VM with one vCPU in real mode, runs a single ``hlt`` and expects KVM_EXIT_HLT,
in a child process with a timeout because a broken KVM_RUN may hang. Like KubeVirt's useEmulation,
a node without working KVM runs its guests under TCG.
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import struct
import subprocess
import sys

KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
KVM_GET_VCPU_MMAP_SIZE = 0xAE04
KVM_CREATE_VCPU = 0xAE41
KVM_SET_USER_MEMORY_REGION = 0x4020AE46
KVM_RUN = 0xAE80
KVM_SET_REGS = 0x4090AE82
KVM_GET_SREGS = 0x8138AE83
KVM_SET_SREGS = 0x4138AE84
KVM_EXIT_HLT = 5
_CODE_AT = 0x1000


def _probe_in_process() -> str:
    kvm = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    if fcntl.ioctl(kvm, KVM_GET_API_VERSION) != 12:
        return "unexpected KVM API version"
    vm = fcntl.ioctl(kvm, KVM_CREATE_VM, 0)
    mem = mmap.mmap(-1, 0x2000)
    mem[_CODE_AT] = 0xF4  # hlt
    addr = ctypes.addressof(ctypes.c_char.from_buffer(mem))
    fcntl.ioctl(vm, KVM_SET_USER_MEMORY_REGION, struct.pack("IIQQQ", 0, 0, 0, 0x2000, addr))
    vcpu = fcntl.ioctl(vm, KVM_CREATE_VCPU, 0)
    run_size = fcntl.ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE)
    run = mmap.mmap(vcpu, run_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    sregs = bytearray(fcntl.ioctl(vcpu, KVM_GET_SREGS, bytes(0x138)))
    struct.pack_into("Q", sregs, 0, 0)  # cs.base
    struct.pack_into("H", sregs, 12, 0)  # cs.selector
    fcntl.ioctl(vcpu, KVM_SET_SREGS, bytes(sregs))
    regs = [0] * 18
    regs[16], regs[17] = _CODE_AT, 0x2  # rip, rflags
    fcntl.ioctl(vcpu, KVM_SET_REGS, struct.pack("18Q", *regs))
    fcntl.ioctl(vcpu, KVM_RUN, 0)
    reason = struct.unpack_from("I", run, 8)[0]
    return "ok" if reason == KVM_EXIT_HLT else f"guest did not halt (exit reason {reason})"


def kvm_runs_guests(timeout: float = 5.0) -> tuple[bool, str]:
    """(works, why). Never raises."""
    if not os.path.exists("/dev/kvm"):
        return False, "/dev/kvm does not exist"
    try:
        done = subprocess.run([sys.executable, "-m", "handler.kvmprobe"], capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return False, f"a test guest did not halt within {timeout:.0f}s"
    lines = (done.stdout.strip() or done.stderr.strip() or "no answer").splitlines()
    verdict = lines[-1]
    return verdict == "ok", verdict


if __name__ == "__main__":
    try:
        print(_probe_in_process())
    except OSError as exc:
        print(f"{exc.strerror or exc} ({type(exc).__name__})")
