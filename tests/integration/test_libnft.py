"""Rules applied in this process through libnftables (servicekit.libnft) land in the namespace
asked for, never in this one; nft's own error text comes back; and no nft program is started."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from servicekit import libnft, nftables


def ruleset(netns: str | None) -> str:
    cmd = ["nft", "list", "ruleset"] if netns is None else ["ip", "netns", "exec", netns, "nft", "list", "ruleset"]
    return subprocess.run(cmd, capture_output=True, check=True, text=True).stdout


def test_a_script_applied_in_process_lands_in_its_namespace(scratch_netns: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    if not libnft.available():
        pytest.skip("no libnftables here: nft is run instead")
    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / "nft").write_text("#!/bin/sh\necho 'nft ran' >&2\nexit 1\n")
    (shims / "nft").chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{shims}:{os.environ['PATH']}")  # a started nft would fail the apply
    table = f"vbt{os.getpid()}"
    script = nftables.nat_table(table, {"prerouting": ["tcp dport 8080 dnat to 10.0.2.2:80"]})
    nftables.apply(script, scratch_netns)
    nftables.apply(script, scratch_netns)  # replaced as a whole, not added twice
    monkeypatch.undo()
    there = ruleset(scratch_netns)
    assert f"table ip {table}" in there and there.count("dnat to 10.0.2.2:80") == 1
    assert f"table ip {table}" not in ruleset(None), "the host's own rules are untouched"
    with pytest.raises(RuntimeError, match="syntax error"):
        nftables.apply(f"table ip {table} {{ chain x {{ bogus }} }}\n", scratch_netns)
    assert ruleset(scratch_netns) == there, "a script that fails changes nothing"
