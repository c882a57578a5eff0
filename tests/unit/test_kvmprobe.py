"""The KVM probe's cached verdict: kept for the same kernel bytes wherever they lie, probed again for
other bytes, and a damaged cache file is probed past, never raised."""

from __future__ import annotations

from pathlib import Path

from handler.kvmprobe import cached_kvm_runs_guests, kernel_identity


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
