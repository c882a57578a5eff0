"""Cluster DNS on this node: the address every guest is offered as its name server (CLUSTER_DNS_IP,
kube-dns's 10.96.0.10), answered here from the Services and Endpoints this node watches.

``<svc>.default.svc.cluster.local`` is the Service's virtual IP, or, for a headless Service, its
endpoints' addresses (and ``<hostname>.<svc>...`` each one that has a hostname). Any other name gets
NXDOMAIN: nothing is forwarded, so no query leaves the cluster. Answers carry a short TTL, since
an endpoint that moved must be found again soon.

The wire format is dnspython's; ``respond`` is pure (bytes in, bytes out), the rest a thin shell: the
node namespace's loopback holding the address, UDP and TCP sockets made there.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Mapping
from ipaddress import IPv4Interface
from typing import cast

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import structlog

from proto import services as svc
from proto import subjects
from proto.dnsconfig import CLUSTER_DNS_IP
from proto.state import Endpoints, Service
from servicekit import netns_socket
from servicekit.informer import Informer, shared
from servicekit.netlink import Netlink, NetlinkError
from servicekit.resync import resync_on_changes
from servicekit.store import Store

log = structlog.get_logger()
DNS_LINK = "lo"
TTL = 5
Index = dict[str, tuple[str, ...]]  # a name (lower case, no trailing dot) -> its A records


def dns_index(services: list[Service], endpoints: Mapping[str, Endpoints]) -> Index:
    """Pure: every name the cluster answers and its addresses."""
    out: Index = {}
    for service in services:
        name = svc.dns_name(service.name)
        if not service.headless:
            out[name] = (service.cluster_ip,)
            continue
        ends = endpoints.get(service.name)
        addresses = [a for s in (ends.subsets if ends else []) for a in s.addresses]
        out[name] = tuple(sorted({a.ip for a in addresses}))
        for a in addresses:
            if a.hostname:
                out[f"{a.hostname}.{name}"] = (a.ip,)
    return out


def respond(query: bytes, index: Index) -> bytes | None:
    """Pure: the reply to one DNS query (None for what is no query at all: nothing is sent back)."""
    try:
        msg = dns.message.from_wire(query)
    except dns.exception.DNSException:
        return None  # garbage; answering it would make us a reflector
    if msg.flags & dns.flags.QR:
        return None  # a response, not a question
    reply = dns.message.make_response(msg, recursion_available=False)
    reply.flags |= dns.flags.AA
    if msg.opcode() != dns.opcode.QUERY or len(msg.question) != 1:
        reply.set_rcode(dns.rcode.NOTIMP if msg.opcode() != dns.opcode.QUERY else dns.rcode.FORMERR)
        return reply.to_wire()
    question = msg.question[0]
    name = question.name.to_text(omit_final_dot=True).lower()
    found = index.get(name)
    if found is None:
        reply.set_rcode(dns.rcode.NXDOMAIN)  # not ours, or no such Service: nothing goes upstream
    elif question.rdtype in (dns.rdatatype.A, dns.rdatatype.ANY) and question.rdclass == dns.rdataclass.IN and found:
        reply.answer.append(dns.rrset.from_text_list(question.name, TTL, dns.rdataclass.IN, dns.rdatatype.A,
                                                     list(found)))
    # else: the name exists with no record of that type (AAAA, MX...): NOERROR, empty (NODATA)
    return reply.to_wire()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, owner: ClusterDns) -> None:
        self.owner = owner
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = respond(data, self.owner.index)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


class ClusterDns:
    def __init__(self, store: Store, netns: str | None, netlink: Netlink) -> None:
        self.netns = netns
        self.netlink = netlink
        self.services: Informer[Service] = shared(store, store.bucket(subjects.BUCKET_SERVICES, Service))
        self.endpoints: Informer[Endpoints] = shared(store, store.bucket(subjects.BUCKET_ENDPOINTS, Endpoints))
        self.index: Index = {}

    def set_up_address(self) -> None:
        """The cluster DNS address, held by the node's loopback (blocking; raises NetlinkError). Held
        there it is the node's own wherever a query comes in (Linux answers for any of its addresses
        on any link), and a kernel without the dummy link type needs nothing more."""
        self.netlink.replace_address(DNS_LINK, IPv4Interface(f"{CLUSTER_DNS_IP}/32"))

    async def run(self) -> None:
        try:
            await asyncio.to_thread(self.set_up_address)
            udp, tcp = await asyncio.to_thread(self._sockets)
        except (NetlinkError, OSError) as exc:
            log.error("cluster DNS not served", error=str(exc))  # guests resolve nothing; all else works
            return
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), sock=udp)
        server = await asyncio.start_server(self._tcp, sock=tcp)
        log.info("cluster DNS up", address=str(CLUSTER_DNS_IP))
        try:
            await resync_on_changes([self.services.changes(), self.endpoints.changes()], self.sync, "cluster DNS")
        finally:
            transport.close()
            server.close()

    async def sync(self) -> None:
        services = [e.value for e in await self.services.items()]
        endpoints = {e.key: e.value for e in await self.endpoints.items()}
        self.index = dns_index(services, endpoints)

    def _sockets(self) -> tuple[socket.socket, socket.socket]:
        address = (str(CLUSTER_DNS_IP), 53)

        def udp() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.setblocking(False)
            return sock

        def tcp() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(64)
            sock.setblocking(False)
            return sock

        return netns_socket.socket_in(self.netns, udp), netns_socket.socket_in(self.netns, tcp)

    async def _tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                size = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 10))[0]
                reply = respond(await asyncio.wait_for(reader.readexactly(size), 10), self.index)
                if reply is None:
                    break
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
