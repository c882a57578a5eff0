"""Floating IPs on the node's bridges, against a fake netlink: the /32 and the subnet's route follow
the VM, and one bridge's trouble does not keep the others (nor the NAT) from being applied."""

from __future__ import annotations

import subprocess
from ipaddress import IPv4Interface, IPv4Network

import pytest

from handler.floatingips import FloatingIPs
from servicekit import nftables
from servicekit.fake_netlink import FakeNetlink, FakeRoute
from servicekit.store import Store

FIP = ("192.168.200.10", "10.244.0.5", "br-provider")
SUBNET = ("192.168.200.0/24", "br-provider")


@pytest.fixture
def applied(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The nft scripts applied (never in the test's own namespace); arping is not run either."""
    scripts: list[str] = []
    monkeypatch.setattr(nftables, "apply", lambda script, netns: scripts.append(script))
    monkeypatch.setattr(subprocess, "run", lambda *_, **__: None)
    return scripts


def fips(store: Store) -> tuple[FloatingIPs, FakeNetlink]:
    netlink = FakeNetlink()
    netlink.add_link("br-provider", kind="bridge")
    return FloatingIPs(store, "node1", "vbtest-node1", frozenset({"br-provider"}), netlink), netlink


def test_the_address_and_its_route_come_and_go_with_the_vm(offline_store: Store, applied: list[str]) -> None:
    fip, netlink = fips(offline_store)
    fip._apply([FIP], {FIP[::2]}, {SUBNET})
    fip._apply([FIP], {FIP[::2]}, {SUBNET})  # a resync: nothing twice
    assert netlink.links["br-provider"].addresses == [IPv4Interface("192.168.200.10/32")]
    assert netlink.routes == {IPv4Network("192.168.200.0/24"): FakeRoute(None, "br-provider")}
    assert netlink.history == ["addr add 192.168.200.10/32 dev br-provider",
                               "route replace 192.168.200.0/24 dev br-provider"]
    fip._apply([], set(), set())  # the VM moved to another node
    assert netlink.links["br-provider"].addresses == [] and netlink.routes == {}
    assert "dnat to 10.244.0.5" in applied[0] and "dnat" not in applied[-1]


def test_an_address_already_there_or_gone_is_no_failure(offline_store: Store, applied: list[str]) -> None:
    fip, netlink = fips(offline_store)
    netlink.add_address("br-provider", IPv4Interface("192.168.200.10/32"))  # left by an earlier handler
    fip._apply([FIP], {FIP[::2]}, {SUBNET})
    netlink.delete_address("br-provider", IPv4Interface("192.168.200.10/32"))  # removed by hand meanwhile
    fip._apply([], set(), set())
    assert fip.held == set() and len(applied) == 2


def test_a_missing_bridge_does_not_stop_the_others(offline_store: Store, applied: list[str]) -> None:
    fip, netlink = fips(offline_store)
    gone = ("192.168.201.10", "10.244.0.6", "br-gone")
    fip.allowed_bridges = frozenset({"br-provider", "br-gone"})
    fip._apply([FIP, gone], {FIP[::2], gone[::2]}, {SUBNET, ("192.168.201.0/24", "br-gone")})
    assert netlink.links["br-provider"].addresses == [IPv4Interface("192.168.200.10/32")]
    assert "br-gone" not in netlink.links and "dnat to 10.244.0.6" in applied[0]  # the NAT stands for both
