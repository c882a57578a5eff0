"""The node's pure NAT rulesets: node ports and floating IPs."""

from ipaddress import IPv4Address

from handler.floatingips import compose_fips
from handler.nodeports import compose_nodeports
from proto.state import Exposure


def test_node_ports_only_for_vms_running_here() -> None:
    exposures = [Exposure(vm="a", port=80, node_port=30080), Exposure(vm="b", port=7, node_port=30007, protocol="UDP"),
                 Exposure(vm="elsewhere", port=22, node_port=30022)]
    rules = compose_nodeports(exposures, {"a": IPv4Address("10.244.0.2"), "b": IPv4Address("10.244.0.3")})
    assert "fib daddr type local tcp dport 30080 dnat to 10.244.0.2:80" in rules
    assert "fib daddr type local udp dport 30007 dnat to 10.244.0.3:7" in rules
    assert "30022" not in rules
    assert rules.splitlines()[:2] == ["table ip virtbus_nodeports", "delete table ip virtbus_nodeports"]


def test_no_exposures_leaves_an_empty_table() -> None:
    assert "dnat to" not in compose_nodeports([], {"a": IPv4Address("10.244.0.2")})


def test_floating_ip_is_one_to_one() -> None:
    rules = compose_fips([("192.168.200.10", "10.244.0.2", "multus-bridge")])
    assert "ip daddr 192.168.200.10 dnat to 10.244.0.2" in rules
    assert 'ip saddr 10.244.0.2 oifname "multus-bridge" snat to 192.168.200.10' in rules
