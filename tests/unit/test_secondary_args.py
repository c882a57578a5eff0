"""The handler's --secondary for the launcher: interface=bridge=address[=type=vlan]."""

from __future__ import annotations

from launcher.secondarynics import SecondaryArg


def test_a_bridge_nic_with_its_address_as_before() -> None:
    assert SecondaryArg.parse("ext-net=multus-bridge=192.168.100.3/24") == SecondaryArg(
        "ext-net", "multus-bridge", "192.168.100.3/24", "bridge", None)


def test_a_layer_2_ovs_nic_on_a_vlan() -> None:
    assert SecondaryArg.parse("ext-net=br1==ovs=100") == SecondaryArg("ext-net", "br1", "", "ovs", 100)


def test_no_vlan_is_none() -> None:
    assert SecondaryArg.parse("ext-net=br1=10.1.0.2/24=ovs=").vlan is None
