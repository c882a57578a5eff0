"""The private libvirtd's child setup: it runs in the pod's network namespace, and under TCG without
transparent huge pages, which the QEMU it starts inherits (real processes, a scratch namespace)."""

from __future__ import annotations

import os
import subprocess

import pytest

from launcher.libvirtd import child_setup

pytestmark = pytest.mark.integration


def status_of_child(netns: str, huge_pages: bool) -> tuple[str, str]:
    """(THP_enabled, the network namespace) of a child started as libvirtd is, and of its own child."""
    done = subprocess.run(["sh", "-c", "grep THP_enabled /proc/self/status; sh -c 'readlink /proc/self/ns/net'"],
                          preexec_fn=child_setup(netns, huge_pages), capture_output=True, text=True, check=True)
    thp, ns = done.stdout.split("\n")[:2]
    return thp.split()[1], ns


def test_libvirtd_runs_in_the_pod_and_under_tcg_its_qemu_gets_no_huge_pages(scratch_netns: str) -> None:
    host = os.readlink("/proc/self/ns/net")
    thp, ns = status_of_child(scratch_netns, huge_pages=False)
    assert thp == "0" and ns != host  # a grandchild (QEMU, to libvirtd) inherits both
    thp, ns = status_of_child(scratch_netns, huge_pages=True)
    assert thp == "1" and ns != host
