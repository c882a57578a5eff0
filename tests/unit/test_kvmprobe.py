"""The KVM probe's cached verdict: kept for the same kernel bytes wherever they lie, probed again for
other bytes, and a damaged cache file is probed past, never raised; probed once by handlers starting
together. The probe itself against a QEMU stand-in: KVM slower than emulation loses, early."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from handler.kvmprobe import cached_kvm_runs_guests, kernel_identity, kvm_runs_guests


class FakeProbe:
    """Answers like kvm_runs_guests and counts what it was asked to boot."""

    ANSWER = (False, "KVM does not boot a Linux kernel here (no sign of life within 12s)")

    def __init__(self) -> None:
        self.asked: list[Path | None] = []

    def __call__(self, kernel: Path | None) -> tuple[bool, str]:
        self.asked.append(kernel)
        return self.ANSWER


def test_the_same_kernel_in_another_guest_directory_keeps_the_verdict(tmp_path: Path) -> None:
    old, new = tmp_path / "guest-a" / "bzImage", tmp_path / "guest-b" / "bzImage"
    for copy in (old, new):
        copy.parent.mkdir()
        copy.write_bytes(b"kernel bytes")
    probe, cache = FakeProbe(), tmp_path / "cache" / "kvm-probe.json"
    assert cached_kvm_runs_guests(old, cache, probe) == FakeProbe.ANSWER
    works, why = cached_kvm_runs_guests(new, cache, probe)
    assert not works and why.endswith("(cached)")
    assert probe.asked == [old]


def test_other_kernel_bytes_are_probed_again(tmp_path: Path) -> None:
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(b"one kernel")
    probe, cache = FakeProbe(), tmp_path / "kvm-probe.json"
    cached_kvm_runs_guests(kernel, cache, probe)
    kernel.write_bytes(b"another kernel")
    works, why = cached_kvm_runs_guests(kernel, cache, probe)
    assert not why.endswith("(cached)")
    assert probe.asked == [kernel, kernel]


def test_a_damaged_cache_file_is_probed_past(tmp_path: Path) -> None:
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(b"kernel bytes")
    probe = FakeProbe()
    for damaged in ("{not json", "[1, 2]", '{"key": 1}'):
        cache = tmp_path / "kvm-probe.json"
        cache.write_text(damaged)
        works, why = cached_kvm_runs_guests(kernel, cache, probe)
        assert not why.endswith("(cached)")
    assert len(probe.asked) == 3


def test_identity_is_the_bytes() -> None:
    assert kernel_identity(None) == "none"
    assert kernel_identity(Path("/nonexistent/bzImage")).startswith("unreadable:")


# A QEMU stand-in: it writes what the guest would print to its output file, under each accelerator
# as told by its name's environment (after a delay, or never), then waits to be killed.
FAKE_QEMU = '''#!/usr/bin/env python3
import os, sys, time
args = sys.argv[1:]
accel = next(a for a in args if a.startswith("q35,accel=")).split("=", 1)[1]
out = next(a for a in args if a.startswith("file,id=out,path=")).split("path=", 1)[1]
kernel = "-kernel" in args
delay = os.environ["FAKE_" + accel.upper() + ("_KERNEL" if kernel else "_SECTOR")]
if delay != "never":
    time.sleep(float(delay))
    with open(out, "ab") as f:
        f.write(b"Linux version 6.1" if kernel else b"K")
time.sleep(120)
'''


def fake_qemu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **delays: str) -> str:
    qemu = tmp_path / "qemu"
    qemu.write_text(FAKE_QEMU)
    qemu.chmod(0o755)
    for name, delay in delays.items():
        monkeypatch.setenv(f"FAKE_{name.upper()}", delay)
    real_exists = os.path.exists
    monkeypatch.setattr(os.path, "exists",
                        lambda p: True if p == "/dev/kvm" else real_exists(p))
    return str(qemu)


def test_kvm_slower_than_emulation_loses_without_waiting_out_the_timeout(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    qemu = fake_qemu(tmp_path, monkeypatch, kvm_sector="0", kvm_kernel="never", tcg_kernel="0.2")
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(b"kernel")
    start = time.monotonic()
    works, why = kvm_runs_guests(kernel, timeout=60, grace=0.5, qemu=qemu)
    assert not works
    assert "KVM does not boot a Linux kernel here" in why and "emulation showed it" in why
    assert time.monotonic() - start < 30  # the verdict came from the race, not from the 60 s timeout


def test_kvm_that_boots_the_kernel_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    qemu = fake_qemu(tmp_path, monkeypatch, kvm_sector="0", kvm_kernel="0.1", tcg_kernel="0.4")
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(b"kernel")
    assert kvm_runs_guests(kernel, timeout=30, grace=0.5, qemu=qemu) == (True, "bzImage booted under KVM")


def test_kvm_a_little_behind_emulation_still_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    qemu = fake_qemu(tmp_path, monkeypatch, kvm_sector="0", kvm_kernel="0.6", tcg_kernel="0")
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(b"kernel")
    assert kvm_runs_guests(kernel, timeout=30, grace=5, qemu=qemu)[0]


def test_no_sign_of_life_from_either_waits_out_the_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    qemu = fake_qemu(tmp_path, monkeypatch, kvm_sector="0", kvm_kernel="never", tcg_kernel="never")
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(b"kernel")
    works, why = kvm_runs_guests(kernel, timeout=1, grace=0.5, qemu=qemu)
    assert not works and "no sign of life within 1s" in why


def test_a_boot_sector_kvm_does_not_run_is_the_verdict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    qemu = fake_qemu(tmp_path, monkeypatch, kvm_sector="never", kvm_kernel="0", tcg_kernel="0")
    works, why = kvm_runs_guests(tmp_path / "bzImage", timeout=1, qemu=qemu)
    assert not works and why.startswith("KVM does not run a boot sector here")


def test_handlers_starting_together_probe_once(tmp_path: Path) -> None:
    """Two handlers of one host ask at once: one probes, the other waits and reads its verdict."""
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(b"kernel bytes")
    cache = tmp_path / "kvm-probe.json"
    asked: list[float] = []

    def slow_probe(_kernel: Path | None) -> tuple[bool, str]:
        asked.append(time.monotonic())
        time.sleep(0.5)
        return FakeProbe.ANSWER

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: cached_kvm_runs_guests(kernel, cache, slow_probe), range(2)))
    assert len(asked) == 1
    assert sorted(why.endswith("(cached)") for _, why in answers) == [False, True]
    assert all(not works for works, _ in answers)
