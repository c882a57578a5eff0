"""port-forward's pure parts: the CLI's TYPE/NAME and [LOCAL:]REMOTE as virtctl writes them, the open
request a handler acts on, where it connects (the VMI's own pod address, never the client's word), and
who NATS lets open sessions."""

from __future__ import annotations

import msgspec
import pytest

from ctl import cli
from ctl.portforward import PortPair, port_pair, target_name
from handler.portforward import pod_address
from proto import subjects
from proto.errors import ApiError, Code
from proto.permissions import Role, permissions
from proto.portforward import PortForwardOpen, check_open
from proto.spec import Network, VMSpec
from proto.state import VMI, Phase, VMIInterface
from tests.unit.test_permissions_rules import matches, may_publish


@pytest.mark.parametrize(("text", "pair"), [("8080:80", (8080, 80)), ("80", (80, 80)), (":22", (0, 22)),
                                            ("0:22", (0, 22)), ("2222:22/tcp", (2222, 22)), ("80/TCP", (80, 80)),
                                            ("tcp/8080:80", (8080, 80)), ("TCP/22", (22, 22))])
def test_ports_as_virtctl_writes_them(text: str, pair: tuple[int, int]) -> None:
    assert port_pair(text) == PortPair(*pair, "TCP")


@pytest.mark.parametrize(("text", "pair"), [("udp/5353:53", (5353, 53)), ("53/udp", (53, 53)), ("UDP/:7", (0, 7)),
                                            ("0:7/UDP", (0, 7))])
def test_udp_ports_as_virtctl_writes_them(text: str, pair: tuple[int, int]) -> None:
    assert port_pair(text) == PortPair(*pair, "UDP")


@pytest.mark.parametrize("text", ["80/sctp", "udp/8080:9090/udp", "tcp/80/tcp", "sctp/80", "x", "8080:", "0", "70000",
                                  "1:0", "-1:80", "a:80", "8080:80:1", "udp/70000"])
def test_ports_it_refuses(text: str) -> None:
    with pytest.raises(ApiError) as refused:
        port_pair(text)
    assert refused.value.field == "ports"


def test_targets() -> None:
    assert [target_name(t) for t in ("vm/testvm", "vmi/testvm", "testvm", "VirtualMachine/testvm",
                                     "vm/testvm/default")] == ["testvm"] * 5  # virtctl's TYPE/NAME/NAMESPACE
    for bad in ("pod/testvm", "vm/", "svc/web", "vm/testvm/prod", "vm/testvm/"):
        with pytest.raises(ApiError):
            target_name(bad)


@pytest.mark.parametrize("argv", [["port-forward", "pod/x", "80"], ["port-forward", "vm/x", "80/sctp"],
                                  ["port-forward", "vm/x", "99999"]])
def test_the_cli_refuses_before_connecting(argv: list[str]) -> None:
    with pytest.raises(ApiError):
        cli.kubectl_forms(cli.parser().parse_args(argv))


@pytest.mark.parametrize(("body", "field"), [
    ({"session": "a" * 16, "port": 0}, "port"), ({"session": "a" * 16, "port": 65536}, "port"),
    ({"session": "a" * 16, "port": 53, "protocol": "SCTP"}, "protocol"), ({"session": "a" * 16, "port": 53,
                                                                           "protocol": "udp/"}, "protocol"),
    ({"session": "../x", "port": 80}, "session")])
def test_open_requests_it_refuses(body: dict[str, object], field: str) -> None:
    with pytest.raises(ApiError) as refused:
        check_open(msgspec.convert(body, PortForwardOpen))
    assert refused.value.code is Code.INVALID and refused.value.field == field


def test_open_requests_name_tcp_or_udp_in_either_case() -> None:
    for given, meant in (("udp", "UDP"), ("UDP", "UDP"), ("tcp", "TCP"), ("TCP", "TCP")):
        assert check_open(PortForwardOpen(session="a" * 16, port=53, protocol=given)).protocol == meant
    assert check_open(PortForwardOpen(session="a" * 16, port=22)).protocol == "TCP"


def vmi(node: str = "node1", phase: Phase = Phase.RUNNING, ip: str | None = "10.244.1.2",
        pod: bool = True) -> VMI:
    nets = [Network(name="default", kind="pod")] if pod else [Network(name="ext", kind="multus", network_name="m")]
    return VMI(name="testvm", uid="u", spec=VMSpec(name="testvm", networks=nets), created_at=1.0, phase=phase,
               node_name=node, interfaces=[VMIInterface(name="default", ip_address=ip)] if ip else [])


def test_a_session_connects_to_the_vmis_own_pod_address_on_its_own_node() -> None:
    assert pod_address(vmi(), "node1", "testvm") == "10.244.1.2"
    cases = [(None, Code.NOT_FOUND), (vmi(node="node2"), Code.NOT_FOUND), (vmi(phase=Phase.SCHEDULED), Code.CONFLICT),
             (vmi(ip=None), Code.INVALID), (vmi(pod=False), Code.INVALID)]
    for got, code in cases:
        with pytest.raises(ApiError) as refused:
            pod_address(got, "node1", "testvm")
        assert refused.value.code is code


def test_only_admins_open_sessions_and_only_the_nodes_own_handler_serves_them() -> None:
    mine = subjects.portforward_open("node1", "testvm")
    up = subjects.portforward_session("node1", "testvm", "a" * 16, "up")
    down = subjects.portforward_session("node1", "testvm", "a" * 16, "down")
    assert may_publish(Role.ADMIN, mine) and may_publish(Role.ADMIN, up)
    assert not may_publish(Role.VIEWER, mine) and not may_publish(Role.VIEWER, up)
    node = permissions(Role.NODE, "node1")
    assert may_publish(Role.NODE, down, "node1")
    assert any(matches(a, subjects.portforward_opens("node1")) for a in node.subscribe.allow)
    assert not may_publish(Role.NODE, subjects.portforward_session("node2", "testvm", "a" * 16, "down"), "node1")
    assert not any(matches(a, subjects.portforward_opens("node2")) for a in node.subscribe.allow)
    assert not any(matches(a, up) for a in permissions(Role.VIEWER).subscribe.allow)
