"""servicekit.cpugroup's pure parts: where the cpu hierarchy is, and the node's group name."""

from __future__ import annotations

from pathlib import Path

import pytest

from servicekit import cpugroup
from servicekit.paths import UnsafeName

V1 = """\
1386 1385 0:74 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
1387 1386 0:75 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
1388 1386 0:76 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
1396 1386 0:84 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
SYSTEMD_V1 = "35 25 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct\n"
V2_ONLY = "30 25 0:27 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"


def test_the_cpu_hierarchy_is_found_where_cpu_is_mounted() -> None:
    assert cpugroup.cpu_mount(V1) == Path("/sys/fs/cgroup/cpu")  # not cpuacct's
    assert cpugroup.cpu_mount(SYSTEMD_V1) == Path("/sys/fs/cgroup/cpu,cpuacct")
    assert cpugroup.cpu_mount(V2_ONLY) is None  # guests keep their nice alone
    assert cpugroup.cpu_mount("garbage\n\n") is None


def test_a_group_is_named_like_the_nodes_namespaces(tmp_path: Path) -> None:
    assert cpugroup.group_name("vbt1a2b3c", "node1") == "vbt1a2b3c-node1-guests"
    assert cpugroup.group_name("vb", "node1", cpugroup.LAUNCHES) == "vb-node1-launches"
    info = tmp_path / "mountinfo"
    info.write_text(f"1 0 0:1 / {tmp_path} rw - cgroup cgroup rw,cpu\n")
    assert cpugroup.locate("vb-node1-guests", info) == tmp_path / "vb-node1-guests"
    with pytest.raises(UnsafeName):
        cpugroup.locate("../escape", info)
    assert cpugroup.locate("x", tmp_path / "missing") is None
