"""The private libvirtd's spawn: it runs in the pod's network namespace, and under TCG without
transparent huge pages, which the QEMU it starts inherits (real processes, a scratch namespace)."""

from __future__ import annotations

import asyncio
import os

import pytest

from launcher.libvirtdstart import spawn

pytestmark = pytest.mark.integration

PROBE = ["sh", "-c", "grep THP_enabled /proc/self/status; sh -c 'readlink /proc/self/ns/net'"]


def status_of_child(netns: str, huge_pages: bool) -> tuple[str, str]:
    """(THP_enabled, the network namespace) of a child started as libvirtd is, and of its own child."""
    done = spawn(PROBE, netns=netns, huge_pages=huge_pages)
    assert done.returncode == 0, done.stderr
    thp, ns = done.stdout.split("\n")[:2]
    return thp.split()[1], ns


def test_libvirtd_runs_in_the_pod_and_under_tcg_its_qemu_gets_no_huge_pages(scratch_netns: str) -> None:
    host = os.readlink("/proc/self/ns/net")
    thp, ns = status_of_child(scratch_netns, huge_pages=False)
    assert thp == "0" and ns != host  # a grandchild (QEMU, to libvirtd) inherits both
    thp, ns = status_of_child(scratch_netns, huge_pages=True)
    assert thp == "1" and ns != host
    assert os.readlink("/proc/thread-self/ns/net") == host  # the spawning thread came back


async def test_the_spawn_leaves_its_thread_home(scratch_netns: str) -> None:
    """The launcher spawns libvirtd from a worker thread (PrivateLibvirtd.begin): that thread runs
    other calls afterwards, each of which must find itself in the launcher's namespace."""
    host = os.readlink("/proc/self/ns/net")

    def spawn_then_look() -> tuple[str, str]:
        done = spawn(["readlink", "/proc/self/ns/net"], netns=scratch_netns, huge_pages=False)
        return done.stdout.strip(), os.readlink("/proc/thread-self/ns/net")

    child, thread = await asyncio.to_thread(spawn_then_look)
    assert child != host and thread == host
