"""A node's probe of QEMU's capabilities (python -m launcher.warmcaps, a real private libvirtd and
QEMU) against the host's copy: the first node probes and keeps its cache for the host; a new node
starts from that copy, which libvirt loads as it is; a copy that no longer matches (here, another
QEMU's date) is probed afresh and replaced."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from launcher import capscache
from tests.conftest import REPO

pytestmark = pytest.mark.integration


def warm(node_dir: Path, host_cache: Path, netns: str) -> dict[str, Any]:
    """The warm's log line (structlog JSON), after it ended well. Its libvirtd runs in ``netns``, as a
    node's does in the node's namespace: never in the host's."""
    done = subprocess.run([sys.executable, "-m", "launcher.warmcaps", "--node-dir", str(node_dir), "--netns", netns],
                          capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={**os.environ, "VIRTBUS_CACHE": str(host_cache), "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stdout + done.stderr
    for line in (done.stdout + done.stderr).splitlines():
        if line.startswith("{") and json.loads(line).get("event") == "QEMU capabilities cached":
            return dict(json.loads(line))
    raise AssertionError(f"no 'QEMU capabilities cached' line:\n{done.stdout}{done.stderr}")


def files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*.xml"))}


def test_a_new_node_starts_from_the_hosts_copy_while_it_matches(tmp_path: Path, scratch_netns: str) -> None:
    cache = tmp_path / "cache"
    host = cache / "qemu-capabilities"
    first = warm(tmp_path / "node1", cache, scratch_netns)
    assert first["from_host"] == 0 and first["saved_for_host"] >= 1
    kept = files(host)
    assert kept and all(capscache.SLOW_FLAG.encode() not in data for data in kept.values())  # trimmed
    assert kept == files(tmp_path / "node1" / capscache.NODE_CACHE_DIR)

    second = warm(tmp_path / "node2", cache, scratch_netns)
    assert second["from_host"] == len(kept) and second["saved_for_host"] == 0  # loaded, not probed
    assert files(tmp_path / "node2" / capscache.NODE_CACHE_DIR) == kept

    name, data = next(iter(kept.items()))
    stale, n = re.subn(rb"<qemuctime>\d+</qemuctime>", b"<qemuctime>1</qemuctime>", data)
    assert n == 1, data[:400]
    (host / name).write_bytes(stale)  # as if QEMU had been upgraded since
    third = warm(tmp_path / "node3", cache, scratch_netns)
    assert third["from_host"] == len(kept) - 1 and third["saved_for_host"] == 1  # probed afresh, kept
    assert files(host)[name] != stale
    assert b"<qemuctime>1</qemuctime>" not in files(tmp_path / "node3" / capscache.NODE_CACHE_DIR)[name]
