"""What the handler removes after a dead launcher, against a fake netlink: the processes left in its
pod netns, the netns, its files."""

from __future__ import annotations

import subprocess
from pathlib import Path

from handler.launchers import Launchers, NodePaths, netns_pids
from servicekit.fake_netlink import FakeNetlink


def launchers(root: Path, netlink: FakeNetlink) -> Launchers:
    return Launchers(NodePaths(root / "state", root / "logs"), node="node1", nats_url="nats://x",
                     netns_prefix="vbtest", kvm=False, netlink=netlink)


def test_clean_up_ends_what_was_left_in_the_pod_and_removes_it(tmp_path: Path) -> None:
    netlink = FakeNetlink()
    left = subprocess.Popen(["sleep", "60"])  # stands in for a qemu the launcher left in its pod
    try:
        netlink.namespaces["vbtest-node1-vm1"] = [left.pid]
        handler = launchers(tmp_path, netlink)
        handler.paths.vmi_dir("vm1").mkdir(parents=True)
        handler.clean_up("vm1")
        assert left.wait(timeout=10) == -9
        assert netlink.namespaces == {} and not handler.paths.vmi_dir("vm1").exists()
    finally:
        if left.poll() is None:
            left.kill()
            left.wait()


def test_clean_up_after_a_launcher_that_removed_its_own_pod(tmp_path: Path) -> None:
    netlink = FakeNetlink()
    handler = launchers(tmp_path, netlink)
    handler.paths.vmi_dir("vm1").mkdir(parents=True)
    handler.clean_up("vm1")
    assert netlink.history == [] and not handler.paths.vmi_dir("vm1").exists()
    assert netns_pids("vbtest-node1-vm1", netlink) == []  # no netns, no processes
