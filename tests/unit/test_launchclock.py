"""The launch's stages and CPU, logged as the domain runs: a stage's name never clashes with the
processes' CPU said beside it (a clash once failed every launch)."""

from __future__ import annotations

import structlog

from launcher.launchclock import LaunchClock


def test_stages_and_cpu_are_logged_whatever_the_stages_are_called() -> None:
    clock = LaunchClock(began=None)
    for stage in ("ready", "libvirtd", "qemu", "children"):
        clock.mark(stage)
    with structlog.testing.capture_logs() as logs:
        clock.log(libvirtd=0.04, qemu=0.1, gone=None)
    stages = next(e for e in logs if e["event"] == "launch stages")
    cpu = next(e for e in logs if e["event"] == "launch cpu")
    assert list(stages)[:4] == ["ready", "libvirtd", "qemu", "children"]
    assert set(cpu["launcher"]) == {"ready", "libvirtd", "qemu", "children"}
    assert cpu["libvirtd"] == 0.04 and cpu["qemu"] == 0.1 and "gone" not in cpu
    assert cpu["children"] >= 0.0
    assert all(0.0 <= v < 60.0 for v in cpu["launcher"].values())
