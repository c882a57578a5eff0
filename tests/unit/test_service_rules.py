"""A node's Service rules, pure: virtual IPs and node ports lead to the Service's endpoints wherever they
run, a Service without any refuses, and hostile stored values never become rule text."""

from __future__ import annotations

import pytest

from handler.servicerules import compose_services, targets
from proto.errors import ApiError
from proto.state import EndpointAddress, EndpointPort, Endpoints, EndpointSubset, Service, ServicePort, ServiceType


def service(name: str = "web", *, cluster_ip: str = "10.96.0.10", node_port: int | None = None,
            port_name: str = "") -> Service:
    return Service(name=name, uid="u", type=ServiceType.NODE_PORT if node_port else ServiceType.CLUSTER_IP,
                   created_at=0.0, selector={"app": name}, cluster_ip=cluster_ip,
                   ports=[ServicePort(port=80, target_port=8080, node_port=node_port, name=port_name)])


def ends(*ips: str, port: int = 8080, name: str = "") -> Endpoints:
    return Endpoints(name="web", subsets=[EndpointSubset(addresses=[EndpointAddress(ip=ip) for ip in ips],
                                                         ports=[EndpointPort(port=port, name=name)])])


def test_a_virtual_ip_and_node_port_lead_to_every_endpoint_at_random() -> None:
    script = compose_services([service(node_port=30080)], {"web": ends("10.244.1.5", "10.244.2.3")})
    lead = ("meta mark set 0x5642 dnat ip to numgen random mod 2 map "
            "{ 0 : 10.244.1.5 . 8080, 1 : 10.244.2.3 . 8080 }")
    assert f"ip daddr 10.96.0.10 tcp dport 80 {lead}" in script
    assert f"fib daddr type local tcp dport 30080 {lead}" in script
    assert "meta mark 0x5642 masquerade" in script


def test_a_service_without_endpoints_refuses_and_a_headless_one_has_no_rule() -> None:
    script = compose_services([service(), service("db", cluster_ip="None")], {})
    assert "ip daddr 10.96.0.10 tcp dport 80 reject" in script
    assert "dnat" not in script and script.count("reject") == 2  # prerouting and output; none for the headless


def test_endpoint_ports_are_matched_by_name_and_hand_written_ones_take_the_target_port() -> None:
    named = Endpoints(name="web", subsets=[
        EndpointSubset(addresses=[EndpointAddress(ip="10.0.0.1")], ports=[EndpointPort(port=9000, name="http")]),
        EndpointSubset(addresses=[EndpointAddress(ip="10.0.0.2")], ports=[EndpointPort(port=9443, name="https")])])
    assert targets(service(port_name="http").ports[0], named) == [("10.0.0.1", 9000)]
    bare = Endpoints(name="web", subsets=[EndpointSubset(addresses=[EndpointAddress(ip="192.168.200.21")])])
    assert targets(service().ports[0], bare) == [("192.168.200.21", 8080)]


@pytest.mark.parametrize("bad", ["10.0.0.1 . 1 } ; flush ruleset ; {", "127.0.0.1"])
def test_hostile_stored_endpoints_never_become_rule_text(bad: str) -> None:
    with pytest.raises(ApiError):
        compose_services([service()], {"web": ends(bad)})


def test_a_load_balancer_address_leads_to_the_endpoints_and_one_node_answers_for_it() -> None:
    from handler.floatingips import answering_node, plan_fips
    from proto.spec import NetworkAttachment
    from proto.state import FloatingIP

    lb = Service(name="web", uid="u", type=ServiceType.LOAD_BALANCER, created_at=0.0, cluster_ip="10.96.0.10",
                 load_balancer_ip="192.168.200.30", ports=[ServicePort(port=80, target_port=8080, node_port=30080)])
    script = compose_services([lb], {"web": ends("10.244.1.5")})
    assert ("ip daddr 192.168.200.30 tcp dport 80 meta mark set 0x5642 dnat ip to numgen random mod 1 map "
            "{ 0 : 10.244.1.5 . 8080 }") in script
    spread = Endpoints(name="web", subsets=[EndpointSubset(addresses=[
        EndpointAddress(ip="10.244.2.3", node="node2"), EndpointAddress(ip="10.244.1.5", node="node1")])])
    assert answering_node(spread) == "node1" and answering_node(None) is None
    net = NetworkAttachment(name="provider", bridge="prov0", subnet="192.168.200.0/24")
    fips = [FloatingIP(address="192.168.200.30", network="provider", service="web"),
            FloatingIP(address="192.168.200.31", network="provider", vm="vm1")]
    held = plan_fips(fips, {"vm1": "10.244.1.7"}, {"provider": net}, frozenset({"prov0"}), [], frozenset({"web"}))
    assert held == [("192.168.200.30", None, "prov0", "192.168.200.0/24"),  # held, led by the Service rules
                    ("192.168.200.31", "10.244.1.7", "prov0", "192.168.200.0/24")]
    assert plan_fips(fips[:1], {}, {"provider": net}, frozenset({"prov0"}), []) == []  # another node answers


def test_external_ips_lead_to_the_endpoints_too() -> None:
    web = Service(name="web", uid="u", type=ServiceType.CLUSTER_IP, created_at=0.0, cluster_ip="10.96.0.10",
                  external_ips=["192.168.100.80"], ports=[ServicePort(port=80, target_port=8080)])
    assert "ip daddr 192.168.100.80 tcp dport 80 meta mark set" in compose_services([web], {"web": ends("10.0.0.1")})
