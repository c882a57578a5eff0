#!/usr/bin/env python3
"""Smoke test of the test guest in plain qemu (no libvirt, no network): boot to the marker, use
the serial shell, power off with the ACPI button; repeated, with the median boot time.

    guest/smoke.py "$(guest/build.sh)" [--memory 64M] [--runs 3]

Like the orchestrator runs it: a qcow2 overlay on the raw image, q35, TCG, a virtio disk.
Prints one line per run and a summary; exits 1 if anything failed. Only stdlib.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

READY = b"VIRTBUS-GUEST-READY"


class Guest:
    def __init__(self, disk: str, memory: str, workdir: str) -> None:
        self.dir = workdir
        overlay = os.path.join(workdir, "overlay.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", disk, "-F", "raw", overlay], check=True)
        self.serial_path = os.path.join(workdir, "serial.sock")
        self.qmp_path = os.path.join(workdir, "qmp.sock")
        self.log_path = os.path.join(workdir, "serial.log")
        self.started = time.monotonic()
        self.proc = subprocess.Popen([
            "qemu-system-x86_64", "-machine", "q35,accel=tcg", "-m", memory, "-nodefaults", "-display", "none",
            "-chardev", f"socket,id=ser0,path={self.serial_path},server=on,wait=off,logfile={self.log_path}",
            "-serial", "chardev:ser0", "-drive", f"file={overlay},if=virtio",
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off", "-no-reboot",
        ])
        self.out = b""
        deadline = time.monotonic() + 10
        while not os.path.exists(self.serial_path):
            self._check_alive(deadline)
            time.sleep(0.01)
        self.serial = socket.socket(socket.AF_UNIX)
        self.serial.connect(self.serial_path)
        self.serial.settimeout(0.05)

    def _check_alive(self, deadline: float) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"qemu exited with {self.proc.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError

    def read_until(self, pattern: bytes, timeout: float) -> float:
        """Reads the serial console until pattern; returns seconds since qemu started."""
        deadline = time.monotonic() + timeout
        while pattern not in self.out:
            try:
                self._check_alive(deadline)
            except TimeoutError:
                raise TimeoutError(f"no {pattern!r} within {timeout}s; console:\n{self.text()}") from None
            try:
                self.out += self.serial.recv(4096)
            except TimeoutError:
                pass
        return time.monotonic() - self.started

    def type(self, line: str) -> None:
        self.serial.sendall(line.encode() + b"\r")

    def powerdown(self, timeout: float) -> float:
        """Presses the ACPI power button over QMP; returns seconds until qemu exited."""
        qmp = socket.socket(socket.AF_UNIX)
        qmp.connect(self.qmp_path)
        f = qmp.makefile("rwb")
        f.readline()
        f.write(b'{"execute":"qmp_capabilities"}\n')
        f.flush()
        f.readline()
        start = time.monotonic()
        f.write(b'{"execute":"system_powerdown"}\n')
        f.flush()
        self.proc.wait(timeout=timeout)
        return time.monotonic() - start

    def text(self) -> str:
        return self.out.decode(errors="replace").replace("\r", "")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.serial.close()


def run_once(disk: str, memory: str) -> tuple[float, float]:
    workdir = tempfile.mkdtemp(prefix="virtbus-smoke-")
    guest = None
    try:
        guest = Guest(disk, memory, workdir)
        boot = guest.read_until(READY, 120)
        time.sleep(0.3)  # let the shell print its prompt
        guest.type("echo smoke-$((40+2))")
        guest.read_until(b"smoke-42", 20)
        off = guest.powerdown(timeout=10)
        return boot, off
    finally:
        if guest is not None:
            guest.close()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("disk", help="the raw disk image guest/build.sh printed")
    ap.add_argument("--memory", default="64M", help="qemu -m (default 64M)")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    boots, offs = [], []
    for i in range(args.runs):
        try:
            boot, off = run_once(os.path.abspath(args.disk), args.memory)
        except Exception as e:  # noqa: BLE001 - report and fail
            print(f"run {i + 1}: FAILED: {e}", file=sys.stderr)
            return 1
        boots.append(boot)
        offs.append(off)
        print(f"run {i + 1}: marker after {boot:.2f}s, shell ok, powered off {off:.2f}s after system_powerdown")
    print(f"ok: {args.runs} runs at -m {args.memory}: boot-to-marker median {statistics.median(boots):.2f}s, "
          f"poweroff max {max(offs):.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
