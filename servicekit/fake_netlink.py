"""A stateful stand-in for ``servicekit.netlink.KernelNetlink``: one namespace's links, addresses,
routes and neighbours, plus the named namespaces of the host, in memory. It refuses what the kernel
refuses, with the same errno (so the same ``NetlinkError`` code): an address on a missing link, a
second copy of an address, a gateway on no connected network, deleting what is not there.

``history`` lists every change that took effect, in the words the real adapter names its
operations with, so a test can say exactly what was done and that nothing was done twice.

A fake is bound to one namespace, as the real adapter is; ``at(name)`` gives the fake of another
namespace of the same fake host (where a veth's far end goes), and ``at(None)`` the caller's own.
"""

from __future__ import annotations

import errno
import hashlib
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from servicekit import vlanports
from servicekit.netlink import Address, NetlinkError, check_netns_name
from servicekit.netlink_links import LinkKind


@dataclass
class FakeLink:
    kind: str
    up: bool = False
    addresses: list[IPv4Interface] = field(default_factory=list)
    mac: str = "02:00:00:00:00:00"
    master: str | None = None
    hairpin: bool = False
    learning: bool = True  # the kernel's default for a new bridge port
    access_vlan: int | None = None  # set_access_vlan's: the port tags and untags this VLAN
    peer: tuple[str | None, str] | None = None  # a veth's other end: (its namespace, its name)


@dataclass(frozen=True)
class FakeRoute:
    via: IPv4Address | None
    link: str


class FakeNetlink:
    def __init__(self, netns: str | None = None, host: FakeNetlink | None = None,
                 kinds: frozenset[str] = frozenset({"bridge", "dummy"})) -> None:
        """``kinds``: the link kinds this fake kernel can make (CI's has no dummy links)."""
        self.netns = netns
        self.host = host or self  # the fake of the caller's own namespace: it holds the named ones
        self.kinds = kinds  # read from the host's fake: one kernel for all its namespaces
        # a new namespace's lo is down and has no address until it is brought up
        self.links: dict[str, FakeLink] = {"lo": FakeLink("loopback", netns is None,
                                                          [IPv4Interface("127.0.0.1/8")] if netns is None else [])}
        self.routes: dict[IPv4Network, FakeRoute] = {}  # those added; connected ones are implied by addresses
        self.neighbours: set[tuple[str, IPv4Address]] = set()
        # the host's named namespaces, shared by all its fakes: name -> the pids in it, and their fakes
        self.namespaces: dict[str, list[int]] = {} if host is None else host.namespaces
        self.spaces: dict[str, FakeNetlink] = {} if host is None else host.spaces
        self.history: list[str] = []

    # --- test setup: what the node had before the agent came -------------------------------------
    def add_link(self, name: str, *addresses: str, kind: str = "ether", up: bool = True) -> None:
        self.links[name] = FakeLink(kind, up, [IPv4Interface(a) for a in addresses], self._new_mac(name))

    def at(self, netns: str | None) -> FakeNetlink:
        """The fake bound to another namespace of this host; one that is missing fails every call with
        NOT_FOUND, as ``KernelNetlink`` of a missing name does."""
        if netns is None:
            return self.host
        if netns in self.spaces:
            return self.spaces[netns]
        fake = FakeNetlink(netns, self.host)
        if netns in self.namespaces:  # made by a test setting ``namespaces`` directly
            self.spaces[netns] = fake
        return fake

    # --- the Netlink protocol ---------------------------------------------------------------------
    def _here(self, operation: str) -> None:
        if self.netns is not None and self.spaces.get(self.netns) is not self:
            raise NetlinkError(operation, errno.ENOENT, f"no network namespace {self.netns!r}")

    def _link(self, name: str, operation: str) -> FakeLink:
        self._here(operation)
        if name not in self.links:
            raise NetlinkError(operation, errno.ENODEV, f"no link {name!r}")
        return self.links[name]

    def _new_mac(self, name: str) -> str:
        raw = bytearray(hashlib.sha256(f"{self.netns}/{name}/{len(self.history)}".encode()).digest()[:6])
        raw[0] = (raw[0] & 0xFE) | 0x02  # unicast, locally administered: what the kernel makes up
        return ":".join(f"{b:02x}" for b in raw)

    def _free(self, name: str, operation: str) -> None:
        self._here(operation)
        if name in self.links:
            raise NetlinkError(operation, errno.EEXIST)

    def ensure_bridge(self, name: str) -> bool:
        self._here(f"bridge {name} up")
        made = name not in self.links
        if made:
            self.links[name] = FakeLink("bridge", mac=self._new_mac(name))
            self.history.append(f"link add {name} type bridge")
        if not self.links[name].up:
            self.links[name].up = True
            self.history.append(f"link set {name} up")
        return made

    def add_address(self, link: str, address: IPv4Interface) -> None:
        operation = f"addr add {address} dev {link}"
        if address in self._link(link, operation).addresses:
            raise NetlinkError(operation, errno.EEXIST)
        self.links[link].addresses.append(address)
        self.history.append(operation)

    def replace_address(self, link: str, address: IPv4Interface) -> None:
        operation = f"addr replace {address} dev {link}"
        if address not in self._link(link, operation).addresses:
            self.links[link].addresses.append(address)
            self.history.append(operation)

    def delete_address(self, link: str, address: IPv4Interface) -> None:
        operation = f"addr del {address} dev {link}"
        if address not in self._link(link, operation).addresses:
            raise NetlinkError(operation, errno.EADDRNOTAVAIL)
        self.links[link].addresses.remove(address)
        self.history.append(operation)

    def addresses(self) -> list[Address]:
        self._here("addr show")
        return [Address(name, a) for name, link in self.links.items() for a in link.addresses]

    def _on_link(self, via: IPv4Address) -> str | None:
        """The link a gateway is reached on: a connected network of an up link, or a link route."""
        for name, link in self.links.items():
            if link.up and any(via in a.network for a in link.addresses):
                return name
        for dst, route in self.routes.items():
            if route.via is None and via in dst:
                return route.link
        return None

    def replace_route(self, dst: IPv4Network, *, via: IPv4Address | None = None, link: str | None = None) -> None:
        operation = " ".join(["route replace", str(dst), *(["via", str(via)] if via else []),
                              *(["dev", link] if link else [])])
        if via is None and link is None:
            raise NetlinkError(operation, errno.EINVAL, "a route needs a gateway or a link")
        self._here(operation)
        if link is not None:
            self._link(link, operation)
        if via is not None:
            reached = self._on_link(via)
            if reached is None or (link is not None and reached != link):
                raise NetlinkError(operation, errno.ENETUNREACH)
            link = reached
        assert link is not None  # one of the two was given, and via found its link
        route = FakeRoute(via, link)
        if self.routes.get(dst) != route:
            self.routes[dst] = route
            self.history.append(operation)

    def delete_route(self, dst: IPv4Network, *, link: str | None = None) -> None:
        operation = " ".join(["route del", str(dst), *(["dev", link] if link else [])])
        self._here(operation)
        if link is not None:
            self._link(link, operation)
        route = self.routes.get(dst)
        if route is None or (link is not None and route.link != link):
            raise NetlinkError(operation, errno.ESRCH)
        del self.routes[dst]
        self.history.append(operation)

    def flush_neighbours(self, address: IPv4Address, link: str) -> None:
        operation = f"neigh flush to {address} dev {link}"
        self._link(link, operation)
        if (link, address) in self.neighbours:
            self.neighbours.discard((link, address))
            self.history.append(operation)

    def create_link(self, name: str, kind: LinkKind) -> None:
        operation = f"link add {name} type {kind}"
        self._free(name, operation)
        if kind not in self.host.kinds:
            raise NetlinkError(operation, errno.EOPNOTSUPP)
        self.links[name] = FakeLink(kind, mac=self._new_mac(name))
        self.history.append(operation)

    def create_veth(self, name: str, peer: str, peer_netns: str | None) -> None:
        operation = f"link add {name} type veth peer name {peer} netns {peer_netns or 'self'}"
        if peer_netns is not None:
            check_netns_name(peer_netns, operation)
        self._free(name, operation)
        there = self.at(peer_netns)
        there._free(peer, operation)
        if there is self and peer == name:
            raise NetlinkError(operation, errno.EEXIST)
        self.links[name] = FakeLink("veth", mac=self._new_mac(name), peer=(peer_netns, peer))
        there.links[peer] = FakeLink("veth", mac=there._new_mac(peer), peer=(self.netns, name))
        self.history.append(operation)
        if there is not self:
            there.history.append(f"link add {peer} (veth peer of {name} in {self.netns or 'self'})")

    def create_tap(self, name: str) -> None:
        operation = f"tuntap add dev {name} mode tap"
        self._free(name, operation)
        self.links[name] = FakeLink("tap", mac=self._new_mac(name))
        self.history.append(operation)

    def delete_link(self, name: str) -> None:
        operation = f"link del {name}"
        deleted = self._link(name, operation)
        del self.links[name]
        for link in self.links.values():
            if link.master == name:  # a bridge's ports are set free with it
                link.master = None
        if deleted.peer is not None:  # a veth's other end goes with it, wherever it is
            self.at(deleted.peer[0]).links.pop(deleted.peer[1], None)
        self.history.append(operation)

    def set_up(self, link: str, up: bool = True) -> None:
        operation = f"link set {link} {'up' if up else 'down'}"
        found = self._link(link, operation)
        if found.up != up:
            found.up = up
            self.history.append(operation)
        if up and found.kind == "loopback" and not found.addresses:
            found.addresses.append(IPv4Interface("127.0.0.1/8"))  # the kernel gives lo its address

    def set_mac(self, link: str, mac: str) -> None:
        operation = f"link set {link} address {mac}"
        found = self._link(link, operation)
        octets = mac.split(":")
        if len(octets) != 6 or not all(len(o) == 2 and all(c in "0123456789abcdefABCDEF" for c in o) for o in octets):
            raise NetlinkError(operation, errno.EINVAL, f"{mac!r} is no hardware address")
        if int(octets[0], 16) & 1:
            raise NetlinkError(operation, errno.EADDRNOTAVAIL)
        if found.mac != mac.lower():
            found.mac = mac.lower()
            self.history.append(operation)

    def set_master(self, link: str, master: str) -> None:
        operation = f"link set {link} master {master}"
        port = self._link(link, operation)
        if self._link(master, operation).kind != "bridge":
            raise NetlinkError(operation, errno.EOPNOTSUPP)
        if link == master:
            raise NetlinkError(operation, errno.ELOOP)
        if port.master != master:
            port.master, port.hairpin, port.learning = master, False, True
            self.history.append(operation)

    def set_port(self, link: str, *, hairpin: bool | None = None, learning: bool | None = None) -> None:
        flags = [f"{key} {'on' if value else 'off'}" for key, value in (("hairpin", hairpin), ("learning", learning))
                 if value is not None]
        operation = " ".join(["link set", link, "type bridge_slave", *flags])
        port = self._link(link, operation)
        if port.master is None:
            raise NetlinkError(operation, errno.EOPNOTSUPP)
        before = (port.hairpin, port.learning)
        port.hairpin = port.hairpin if hairpin is None else hairpin
        port.learning = port.learning if learning is None else learning
        if (port.hairpin, port.learning) != before:
            self.history.append(operation)

    def set_access_vlan(self, link: str, vid: int) -> None:
        operation = f"vlan access port {link} vid {vid}"
        port = self._link(link, operation)
        vlanports.check_vid(vid)
        if port.access_vlan != vid:
            port.access_vlan = vid
            self.history.append(operation)

    def link_mac(self, link: str) -> str:
        return self._link(link, f"link show {link}").mac

    def flush_addresses(self, link: str) -> None:
        operation = f"addr flush dev {link}"
        if self._link(link, operation).addresses:
            self.links[link].addresses.clear()
            self.history.append(operation)

    def create_netns(self, name: str) -> None:
        operation = f"netns add {name}"
        check_netns_name(name, operation)
        if name in self.namespaces:
            raise NetlinkError(operation, errno.EEXIST)
        self.namespaces[name] = []
        self.spaces[name] = FakeNetlink(name, self.host)
        self.history.append(operation)

    def delete_netns(self, name: str) -> None:
        operation = f"netns delete {name}"
        check_netns_name(name, operation)
        if self.namespaces.pop(name, None) is None:
            raise NetlinkError(operation, errno.ENOENT)
        self.spaces.pop(name, None)  # the fakes bound to it now fail as a missing namespace
        self.history.append(operation)

    def netns_pids(self, name: str) -> list[int]:
        operation = f"netns pids {name}"
        check_netns_name(name, operation)
        if name not in self.namespaces:
            raise NetlinkError(operation, errno.ENOENT)
        return list(self.namespaces[name])
