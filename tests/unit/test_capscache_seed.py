"""launcher.capscache's host copy: a node with an empty cache is seeded from it, a node's probe keeps
it up to date, and whether libvirt kept a seeded file is read from its mtime (real files, tmp_path)."""

from __future__ import annotations

import os
from pathlib import Path

from launcher import capscache


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_an_empty_node_cache_is_seeded_from_the_host_and_a_filled_one_is_not(tmp_path: Path) -> None:
    host, node, other = tmp_path / "host", tmp_path / "node", tmp_path / "other"
    write(host / "a.xml", "<qemuCaps>a</qemuCaps>")
    write(host / "notes.txt", "not a cache file")
    copied = capscache.seed(node, host)
    assert sorted(copied) == ["a.xml"] and (node / "a.xml").read_text() == "<qemuCaps>a</qemuCaps>"
    assert not (node / "notes.txt").exists()
    write(other / "b.xml", "<qemuCaps>its own</qemuCaps>")
    assert capscache.seed(other, host) == {}  # a node's own cache is libvirt's to judge
    assert sorted(p.name for p in other.iterdir()) == ["b.xml"]
    assert capscache.seed(tmp_path / "third", tmp_path / "no-host-copy") == {}


def test_a_seeded_file_rewritten_by_libvirt_counts_as_probed_afresh(tmp_path: Path) -> None:
    host, node = tmp_path / "host", tmp_path / "node"
    write(host / "a.xml", "a")
    write(host / "b.xml", "b")
    copied = capscache.seed(node, host)
    assert sorted(capscache.reused(node, copied)) == ["a.xml", "b.xml"]
    (node / "b.xml").write_text("probed again")
    os.utime(node / "b.xml", ns=(0, copied["b.xml"] + 1_000_000))
    (node / "a.xml").unlink()
    assert capscache.reused(node, copied) == []


def test_the_node_cache_is_kept_for_the_host_only_where_it_differs(tmp_path: Path) -> None:
    host, node = tmp_path / "host", tmp_path / "node"
    write(node / "a.xml", "new")
    write(node / "b.xml", "same")
    write(host / "b.xml", "same")
    write(host / "c.xml", "another emulator's")
    assert [p.name for p in capscache.keep(node, host)] == ["a.xml"]
    assert (host / "a.xml").read_text() == "new" and (host / "c.xml").read_text() == "another emulator's"
    assert capscache.keep(node, host) == []  # nothing new
    assert not [p for p in host.iterdir() if p.name.startswith(".")]  # no temp file left
