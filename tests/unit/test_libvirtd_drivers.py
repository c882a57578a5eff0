"""The private libvirtd is pointed (LIBVIRT_DRIVER_DIR) at a directory holding only the QEMU driver."""

from __future__ import annotations

from pathlib import Path

from launcher.libvirtdstart import qemu_only_drivers


def test_a_directory_with_only_the_qemu_driver(tmp_path: Path) -> None:
    system = tmp_path / "usr/lib/x86_64-linux-gnu/libvirt/connection-driver"
    system.mkdir(parents=True)
    for name in ("qemu", "network", "nodedev", "storage"):
        (system / f"libvirt_driver_{name}.so").write_bytes(b"\x7fELF")
    pattern = str(tmp_path / "usr/lib/*/libvirt/connection-driver/libvirt_driver_qemu.so")
    drivers = qemu_only_drivers(tmp_path / "vmi" / "libvirt-drivers", (pattern,))
    assert drivers is not None
    assert [p.name for p in drivers.iterdir()] == ["libvirt_driver_qemu.so"]
    assert (drivers / "libvirt_driver_qemu.so").resolve() == system / "libvirt_driver_qemu.so"
    assert qemu_only_drivers(drivers, (pattern,)) == drivers  # again (a libvirtd restart): the same


def test_no_qemu_driver_found_leaves_libvirtd_as_it_is(tmp_path: Path) -> None:
    assert qemu_only_drivers(tmp_path / "d", (str(tmp_path / "nowhere/*.so"),)) is None
    assert not (tmp_path / "d").exists()
