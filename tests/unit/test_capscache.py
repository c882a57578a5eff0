"""The node's QEMU capabilities cache loses the one flag that makes every domain start ask QEMU for
each CPU feature in turn, and nothing else."""

from __future__ import annotations

import shutil
from pathlib import Path

from launcher import capscache
from launcher.libvirtdstart import libvirtd_path

CACHED = """<qemuCaps>
  <selfctime>1795942124</selfctime>
  <flag name='kvm'/>
  <flag name='x86-max-cpu'/>
  <flag name='cpu-unavailable-features'/>
  <flag name='canonical-cpu-features'/>
</qemuCaps>
"""


def test_only_that_flag_goes() -> None:
    out = capscache.trimmed(CACHED)
    assert out == CACHED.replace("  <flag name='cpu-unavailable-features'/>\n", "")
    assert "<flag name='canonical-cpu-features'/>" in out
    assert capscache.trimmed(out) is None  # trimmed already: nothing to write


def test_each_cache_file_is_rewritten_once(tmp_path: Path) -> None:
    x86, i386 = tmp_path / "a.xml", tmp_path / "b.xml"
    x86.write_text(CACHED)
    x86.chmod(0o600)
    i386.write_text(CACHED.replace("  <flag name='cpu-unavailable-features'/>\n", ""))
    assert capscache.trim(tmp_path) == [x86]
    assert capscache.SLOW_FLAG not in x86.read_text()
    assert x86.stat().st_mode & 0o777 == 0o600  # as libvirt wrote it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.xml", "b.xml"]  # no temporary file left
    assert capscache.trim(tmp_path) == []


def test_no_cache_yet(tmp_path: Path) -> None:
    assert capscache.trim(tmp_path / "nowhere") == []


def test_libvirtd_is_run_by_its_full_path() -> None:
    """By a bare name, libvirtd cannot stat its own binary and dates itself by its modules alone,
    which makes its QEMU capabilities cache outdated at every start (launcher.libvirtd)."""
    found = shutil.which("libvirtd")
    assert libvirtd_path() == (found or "libvirtd")
    if found:
        assert Path(libvirtd_path()).is_absolute()
