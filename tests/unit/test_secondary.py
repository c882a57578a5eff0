"""Secondary networks' host bridges on the node, against a fake netlink."""

from __future__ import annotations

import pytest

from handler.secondary import SecondaryNetworks
from proto.errors import ApiError, Code
from servicekit.fake_netlink import FakeNetlink


def test_a_bridge_is_made_once_and_kept_up() -> None:
    netlink = FakeNetlink()
    secondary = SecondaryNetworks("vbtest-node1", frozenset({"multus-bridge"}), netlink)
    for _ in range(3):  # every VM on that network asks for it
        secondary.ensure_bridge("multus-bridge")
    assert netlink.history == ["link add multus-bridge type bridge", "link set multus-bridge up"]
    netlink.links["multus-bridge"].up = False  # someone took it down
    secondary.ensure_bridge("multus-bridge")
    assert netlink.links["multus-bridge"].up and netlink.history[-1] == "link set multus-bridge up"


def test_an_existing_link_is_used_as_it_is() -> None:
    netlink = FakeNetlink()
    netlink.add_link("br-provider", "192.168.200.1/24", kind="bridge")
    SecondaryNetworks(None, frozenset({"br-provider"}), netlink).ensure_bridge("br-provider")
    assert netlink.history == [] and netlink.links["br-provider"].addresses  # untouched


@pytest.mark.parametrize("bridge", ["eth0", "vbpods", "multus-bridge; rm"])
def test_a_bridge_the_node_does_not_allow_is_never_made(bridge: str) -> None:
    netlink = FakeNetlink()
    secondary = SecondaryNetworks(None, frozenset({"multus-bridge", "vbpods"}), netlink)
    with pytest.raises(ApiError) as caught:
        secondary.ensure_bridge(bridge)
    assert caught.value.code is Code.INVALID and caught.value.field == "bridge"
    assert netlink.history == []
