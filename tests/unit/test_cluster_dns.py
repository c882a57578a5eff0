"""Cluster DNS, pure: a Service's name is its virtual IP, a headless one's its endpoints' addresses;
names that are not ours get NXDOMAIN and nothing leaves; garbage gets no answer at all. And the DHCP
lease's search list (option 119), so a guest's short names find Services."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype

from handler.clusterdns import dns_index, respond
from launcher.dhcp_packet import domain_search
from proto.dnsconfig import DNS_SEARCH
from proto.state import HEADLESS, EndpointAddress, Endpoints, EndpointSubset, Service, ServicePort, ServiceType


def service(name: str, cluster_ip: str) -> Service:
    return Service(name=name, uid="u", type=ServiceType.CLUSTER_IP, created_at=0.0, cluster_ip=cluster_ip,
                   ports=[ServicePort(port=80, target_port=80)])


INDEX = dns_index([service("web", "10.96.0.12"), service("mongo", HEADLESS), service("empty", HEADLESS)], {
    "mongo": Endpoints(name="mongo", manual=True, subsets=[EndpointSubset(addresses=[
        EndpointAddress(ip="192.168.200.22"), EndpointAddress(ip="192.168.200.21", hostname="db0")])])})


def ask(name: str, rdtype: str = "A") -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    reply = respond(query.to_wire(), INDEX)
    assert reply is not None
    return dns.message.from_wire(reply)


def addresses(reply: dns.message.Message) -> list[str]:
    return sorted(r.address for rrset in reply.answer for r in rrset)


def test_a_service_name_is_its_virtual_ip_and_a_headless_ones_its_endpoints() -> None:
    web = ask("web.default.svc.cluster.local.")
    assert web.rcode() == dns.rcode.NOERROR and addresses(web) == ["10.96.0.12"]
    assert web.flags & dns.flags.AA and web.answer[0].ttl == 5
    assert addresses(ask("MONGO.default.svc.cluster.local")) == ["192.168.200.21", "192.168.200.22"]
    assert addresses(ask("db0.mongo.default.svc.cluster.local")) == ["192.168.200.21"]
    empty = ask("empty.default.svc.cluster.local")
    assert empty.rcode() == dns.rcode.NOERROR and empty.answer == []


def test_names_not_ours_get_nxdomain_and_other_types_of_ours_no_data() -> None:
    for name in ("example.com.", "nope.default.svc.cluster.local.", "web.default.svc.cluster.local.evil."):
        assert ask(name).rcode() == dns.rcode.NXDOMAIN, name
    aaaa = ask("web.default.svc.cluster.local", "AAAA")
    assert aaaa.rcode() == dns.rcode.NOERROR and aaaa.answer == []


def test_garbage_and_responses_get_no_answer_and_other_opcodes_notimp() -> None:
    assert respond(b"\x00\x01garbage", INDEX) is None
    response = dns.message.make_response(dns.message.make_query("web.default.svc.cluster.local", "A"))
    assert respond(response.to_wire(), INDEX) is None
    update = dns.message.make_query("web.default.svc.cluster.local", "A")
    update.set_opcode(dns.opcode.NOTIFY)
    reply = respond(update.to_wire(), INDEX)
    assert reply is not None and dns.message.from_wire(reply).rcode() == dns.rcode.NOTIMP


def test_the_search_list_is_written_as_rfc_3397_says() -> None:
    assert domain_search(("a.b", "c")) == b"\x01a\x01b\x00\x01c\x00"
    wire = domain_search(DNS_SEARCH)
    assert wire.startswith(b"\x07default\x03svc\x07cluster\x05local\x00")
