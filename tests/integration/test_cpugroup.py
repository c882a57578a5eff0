"""servicekit.cpugroup on this host's real cpu hierarchy (cgroup v1): a group made with its weight,
a process moved in with all its threads, the group kept while it has one and gone after."""

from __future__ import annotations

import secrets
import subprocess
import time
from pathlib import Path

import pytest

from servicekit import cpugroup, processes


def test_a_guest_group_holds_its_processes_and_goes_when_empty() -> None:
    name = cpugroup.group_name(f"vbt{secrets.token_hex(3)}", "node1")
    if cpugroup.locate(name) is None:
        pytest.skip("no cgroup v1 cpu hierarchy here")
    group = cpugroup.make(name)
    assert group is not None and group.is_dir()
    try:
        assert (group / "cpu.shares").read_text().strip() == str(cpugroup.GUEST_SHARES)
        with subprocess.Popen(["sleep", "30"]) as guest:
            try:
                assert cpugroup.join(group, guest.pid)
                assert cpugroup.members(group) == [guest.pid]
                lines = Path(f"/proc/{guest.pid}/cgroup").read_text().splitlines()
                assert any(line.split(":")[1].split(",").count("cpu") and line.endswith(f"/{name}")
                           for line in lines), lines
                assert not cpugroup.remove(group)  # a running guest keeps its group
            finally:
                guest.kill()
        deadline = time.monotonic() + 5
        while cpugroup.members(group) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cpugroup.remove(group) and not group.exists()
        assert not cpugroup.join(group, guest.pid)  # nothing to join once it is gone
    finally:
        if group.exists():
            for pid in cpugroup.members(group):
                (group.parent / "cgroup.procs").write_text(f"{pid}\n")  # back to the root, then gone
            cpugroup.remove(group)
        assert not processes.alive(guest.pid)
