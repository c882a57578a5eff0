"""What the handler removes after a dead launcher, against a fake netlink: the processes left in its
pod netns, the netns, its files."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

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


class Spawned:
    """Stands in for subprocess.Popen: what was started, and a process still running."""

    started: list[list[str]] = []

    def __init__(self, cmd: list[str], **kwargs: object) -> None:
        Spawned.started.append(cmd)

    def poll(self) -> int | None:
        return None

    def wait(self, timeout: float | None = None) -> int:
        raise subprocess.TimeoutExpired("warmcaps", timeout or 0.0)


def test_the_node_warms_qemu_capabilities_once_as_it_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subprocess, "Popen", Spawned)
    Spawned.started = []
    (tmp_path / "logs").mkdir()
    handler = Launchers(NodePaths(tmp_path / "state", tmp_path / "logs"), node="node1", nats_url="nats://x",
                        netns_prefix="vbtest", kvm=False, netlink=FakeNetlink(), node_netns="vbtest-node1", fork=True)
    handler.warm_caps()
    handler.warm_caps()  # a second call (a restarted fork server) starts no second one
    assert [cmd[1:] for cmd in Spawned.started] == [
        ["-m", "launcher.warmcaps", "--node-dir", str(tmp_path / "state"), "--netns", "vbtest-node1"]]
    handler.stop_fork_server()  # waits a while for it, and lets it be


def test_no_warming_where_launchers_are_spawned_afresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subprocess, "Popen", Spawned)
    Spawned.started = []
    launchers(tmp_path, FakeNetlink()).warm_caps()
    assert Spawned.started == []


def test_the_warming_process_is_reaped_once_it_ends(tmp_path: Path) -> None:
    """No zombie left beside the handler: the node's warming process (held so that it runs once) was
    never waited for. A real child that ends at once stands in for launcher.warmcaps."""
    (tmp_path / "logs").mkdir()
    handler = Launchers(NodePaths(tmp_path / "state", tmp_path / "logs"), node="node1", nats_url="nats://x",
                        netns_prefix="vbtest", kvm=False, netlink=FakeNetlink(), node_netns="vbtest-node1", fork=True)
    handler.warming = subprocess.Popen(["true"])
    pid = handler.warming.pid
    stat = Path(f"/proc/{pid}/stat")
    for _ in range(200):  # ended, not yet waited for: a zombie
        if stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
            break
        time.sleep(0.01)
    handler.reap_warming()
    assert not stat.exists() and handler.warming.returncode == 0
    handler.warm_caps()  # ended is not gone: no second warming for this start
    assert handler.warming.pid == pid


def warming_node(tmp_path: Path, probe: list[str] | None) -> Launchers:
    (tmp_path / "logs").mkdir(exist_ok=True)
    node = Launchers(NodePaths(tmp_path / "state", tmp_path / "logs"), node="node1", nats_url="nats://x",
                     netns_prefix="vbtest", kvm=False, netlink=FakeNetlink(), node_netns="vbtest-node1", fork=True)
    node.warming = subprocess.Popen(probe) if probe else None  # a real child stands in for launcher.warmcaps
    return node


async def test_a_node_waits_for_its_probe_of_qemu_to_end(tmp_path: Path) -> None:
    """What the handler waits for before it registers the node: the probe's end, not a fixed time."""
    node = warming_node(tmp_path, ["sleep", "0.4"])
    start = time.monotonic()
    assert await node.wait_warm(10.0) is True
    assert 0.3 < time.monotonic() - start < 5.0
    assert node.warming is not None and node.warming.returncode == 0  # reaped: no zombie


async def test_a_probe_that_hangs_is_waited_for_no_longer_than_asked(tmp_path: Path) -> None:
    node = warming_node(tmp_path, ["sleep", "60"])
    try:
        start = time.monotonic()
        assert await node.wait_warm(0.3) is False
        assert time.monotonic() - start < 5.0
    finally:
        assert node.warming is not None
        node.warming.kill()
        node.warming.wait()


async def test_no_probe_no_wait(tmp_path: Path) -> None:
    assert await warming_node(tmp_path, None).wait_warm(10.0) is True
    ended = warming_node(tmp_path, ["true"])
    assert ended.warming is not None
    ended.warming.wait()
    assert await ended.wait_warm(10.0) is True
