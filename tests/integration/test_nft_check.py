"""The composed NAT scripts are real nftables: ``nft -c`` (check only, nothing applied) accepts them,
run in a throwaway network namespace (``unshare --net``) so not even the check meets the host's."""

from __future__ import annotations

import shutil
import subprocess
from ipaddress import IPv4Address

import pytest

from handler.floatingips import compose_fips
from handler.nodeports import compose_nodeports
from proto.state import Exposure

pytestmark = pytest.mark.integration


def nft_check(script: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("nft") is None or shutil.which("unshare") is None:
        pytest.fail("nft and unshare are needed: run scripts/setup.sh")
    return subprocess.run(["unshare", "--net", "nft", "-c", "-f", "-"], input=script, capture_output=True,
                          text=True, check=False, timeout=30)


def test_nft_check_can_fail() -> None:
    assert nft_check("table ip t {\n  chain c {\n    tcp dport 1 accept; flush ruleset\n").returncode != 0


def test_node_ports_script_is_accepted_by_nft() -> None:
    script = compose_nodeports(
        [Exposure(vm="a", port=80, node_port=30080), Exposure(vm="b", port=53, node_port=30053, protocol="UDP")],
        {"a": IPv4Address("10.244.0.2"), "b": IPv4Address("10.244.1.3")})
    done = nft_check(script)
    assert done.returncode == 0, done.stderr
    assert "dport 30053 dnat to 10.244.1.3:53" in script


def test_empty_node_ports_script_is_a_real_empty_table() -> None:
    script = compose_nodeports([], {})
    done = nft_check(script)
    assert done.returncode == 0, done.stderr
    assert "table ip virtbus_nodeports {" in script and "dnat to" not in script


def test_floating_ips_script_is_accepted_by_nft() -> None:
    done = nft_check(compose_fips([("192.168.200.10", "10.244.0.2", "multus-bridge")]))
    assert done.returncode == 0, done.stderr


def test_services_script_is_accepted_by_nft() -> None:
    from handler.servicerules import compose_services
    from proto.state import EndpointAddress, EndpointPort, Endpoints, EndpointSubset, Service, ServicePort, ServiceType

    web = Service(name="web", uid="u", type=ServiceType.NODE_PORT, created_at=0.0, cluster_ip="10.96.0.10",
                  ports=[ServicePort(port=80, target_port=8080, node_port=30080),
                         ServicePort(port=53, target_port=53, protocol="UDP", name="dns")])
    empty = Service(name="empty", uid="u", type=ServiceType.CLUSTER_IP, created_at=0.0, cluster_ip="10.96.0.11",
                    ports=[ServicePort(port=80, target_port=80)])
    ends = Endpoints(name="web", subsets=[EndpointSubset(
        addresses=[EndpointAddress(ip="10.244.1.5"), EndpointAddress(ip="10.244.2.3")],
        ports=[EndpointPort(port=8080), EndpointPort(port=53, protocol="UDP", name="dns")])])
    script = compose_services([web, empty], {"web": ends})
    done = nft_check(script)
    assert done.returncode == 0, done.stderr
    assert "udp dport 53 meta mark set" in script and "tcp dport 80 reject" in script
