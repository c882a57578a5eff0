"""libvirtd dates itself by its argv[0] and the modules it loads; it is run dated as the newest of
its binary and modules (launcher.libvirtdstart.dated_as_newest), so a module loaded mid-launch can no
longer make the QEMU capabilities cache look outdated."""

from __future__ import annotations

import os
import time
from pathlib import Path

from launcher.libvirtdstart import dated_as_newest, newest


def test_the_newest_file_and_the_binary_on_a_tie() -> None:
    binary = "/usr/sbin/libvirtd"
    assert newest({binary: 100, "/m/a.so": 90, "/m/b.so": 99}, binary) == binary
    assert newest({binary: 100, "/m/a.so": 100}, binary) == binary  # a tie dates nothing later
    assert newest({binary: 100, "/m/a.so": 90, "/m/b.so": 101}, binary) == "/m/b.so"
    assert newest({"/m/a.so": 90}, binary) == "/m/a.so"  # the binary not found
    assert newest({}, binary) == binary


def test_run_as_the_binary_while_no_module_is_newer(tmp_path: Path) -> None:
    (tmp_path / "modules").mkdir()
    (tmp_path / "modules" / "libvirt_driver_qemu.so").write_bytes(b"")
    time.sleep(1.05)  # libvirt compares whole seconds
    binary = tmp_path / "sbin-libvirtd"
    binary.write_bytes(b"")
    work = tmp_path / "vmi"
    work.mkdir()
    assert dated_as_newest(work, str(binary), (str(tmp_path / "modules" / "*.so"),)) == str(binary)
    assert not (work / "libvirtd").exists()


def test_a_module_newer_than_the_binary_dates_the_daemon(tmp_path: Path) -> None:
    binary = tmp_path / "sbin-libvirtd"
    binary.write_bytes(b"")
    modules = tmp_path / "storage-file"
    modules.mkdir()
    time.sleep(1.05)
    late = modules / "libvirt_storage_file_fs.so"  # upgraded on its own, or hard-linked by perf
    late.write_bytes(b"")
    work = tmp_path / "vmi"
    work.mkdir()
    argv0 = dated_as_newest(work, str(binary), (str(modules / "*.so"),))
    assert argv0 == str(work / "libvirtd")
    assert os.readlink(argv0) == str(late)
    assert int(os.stat(argv0).st_ctime) == int(late.stat().st_ctime)  # what libvirt's stat of argv[0] sees
    assert dated_as_newest(work, str(binary), (str(modules / "*.so"),)) == argv0  # again: the same link
