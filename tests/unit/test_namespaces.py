"""The launcher's namespace and tap, against a fake host: made once, found again when the launcher
runs again, and a namespace that cannot be made is the OSError the launcher's start reports."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from typing import Any

import pytest

from launcher import namespaces
from servicekit import netns_sysctl
from servicekit.fake_netlink import FakeNetlink

SYSCTLS: list[tuple[str | None, tuple[str, ...], bool]] = []


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> FakeNetlink:
    def no_sysctl(netns: str | None, settings: Iterable[str], *, missing_ok: bool = False) -> None:
        SYSCTLS.append((netns, tuple(settings), missing_ok))

    def no_process(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"no program is run for the namespace: {args}")

    SYSCTLS.clear()
    monkeypatch.setattr(netns_sysctl, "write", no_sysctl)
    monkeypatch.setattr(subprocess, "run", no_process)
    return FakeNetlink()


def test_the_pod_namespace_is_made_with_lo_up_and_found_again(host: FakeNetlink) -> None:
    namespaces.create_netns("vbtest-pod", netns_adapter=host.at)
    namespaces.create_netns("vbtest-pod", netns_adapter=host.at)  # a launcher run again
    assert host.history == ["netns add vbtest-pod"]
    assert host.at("vbtest-pod").links["lo"].up
    # the pod's bridges stay out of br_netfilter's IP hooks, where the module is loaded at all
    assert SYSCTLS == [("vbtest-pod", namespaces.BRIDGE_NF_OFF, True)] * 2


def test_a_namespace_that_cannot_be_made_is_an_os_error(host: FakeNetlink) -> None:
    with pytest.raises(OSError, match="not a namespace name"):
        namespaces.create_netns("../etc", netns_adapter=host.at)


def test_the_tap_is_made_up_once(host: FakeNetlink) -> None:
    host.create_netns("vbtest-pod")
    namespaces.create_tap("vbtest-pod", "tap0", netns_adapter=host.at)
    namespaces.create_tap("vbtest-pod", "tap0", netns_adapter=host.at)
    pod = host.at("vbtest-pod")
    assert pod.links["tap0"].kind == "tap" and pod.links["tap0"].up
    assert pod.history == ["tuntap add dev tap0 mode tap", "link set tap0 up"]


def test_deleting_the_namespace_twice_is_no_failure(host: FakeNetlink) -> None:
    host.create_netns("vbtest-pod")
    namespaces.delete_netns("vbtest-pod", netns_adapter=host.at)
    namespaces.delete_netns("vbtest-pod", netns_adapter=host.at)
    assert "vbtest-pod" not in host.namespaces
