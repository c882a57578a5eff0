from ipaddress import IPv4Address

from launcher.masquerade import Masquerade, compose_ruleset
from proto.spec import Port


def test_all_ports_forwarded_by_default() -> None:
    rules = compose_ruleset(Masquerade(pod_ip=IPv4Address("10.244.1.5")))
    assert 'iifname "eth0" ip daddr 10.244.1.5 meta l4proto { tcp, udp } dnat to 10.0.2.2' in rules
    assert "ip daddr 127.0.0.1 meta l4proto { tcp, udp } dnat to 10.0.2.2" in rules
    assert 'ip saddr 10.0.2.2 oifname "eth0" masquerade' in rules
    assert 'ip saddr 127.0.0.1 oifname "k6t-eth0" snat to 10.0.2.1' in rules
    # hairpin: the guest reaching its own pod IP comes back to itself, seen from the gateway
    assert ("iifname \"k6t-eth0\" ip saddr 10.0.2.2 ip daddr 10.244.1.5 meta l4proto { tcp, udp } dnat to 10.0.2.2"
            in rules)
    assert 'ip saddr 10.0.2.2 ip daddr 10.0.2.2 oifname "k6t-eth0" snat to 10.0.2.1' in rules


def test_ports_limit_what_is_forwarded() -> None:
    rules = compose_ruleset(Masquerade(pod_ip=IPv4Address("10.244.1.5"),
                                       ports=(Port(port=80), Port(port=22), Port(port=53, protocol="UDP"))))
    assert "tcp dport { 22, 80 } dnat to 10.0.2.2" in rules
    assert "udp dport { 53 } dnat to 10.0.2.2" in rules
    assert "l4proto" not in rules


def test_replaces_the_table_atomically() -> None:
    rules = compose_ruleset(Masquerade(pod_ip=IPv4Address("10.244.1.5"))).splitlines()
    assert rules[:3] == ["table ip virtbus_nat", "delete table ip virtbus_nat", "table ip virtbus_nat {"]
