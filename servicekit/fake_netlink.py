"""A stateful stand-in for ``servicekit.netlink.PyrouteNetlink``: one namespace's links, addresses,
routes and neighbours, plus the named namespaces of the host, in memory. It refuses what the kernel
refuses, with the same errno (so the same ``NetlinkError`` code): an address on a missing link, a
second copy of an address, a gateway on no connected network, deleting what is not there.

``history`` lists every change that took effect, in the words the real adapter names its
operations with, so a test can say exactly what was done and that nothing was done twice.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from servicekit.netlink import Address, NetlinkError, check_netns_name


@dataclass
class FakeLink:
    kind: str
    up: bool = False
    addresses: list[IPv4Interface] = field(default_factory=list)


@dataclass(frozen=True)
class FakeRoute:
    via: IPv4Address | None
    link: str


class FakeNetlink:
    def __init__(self) -> None:
        self.links: dict[str, FakeLink] = {"lo": FakeLink("loopback", True, [IPv4Interface("127.0.0.1/8")])}
        self.routes: dict[IPv4Network, FakeRoute] = {}  # those added; connected ones are implied by addresses
        self.neighbours: set[tuple[str, IPv4Address]] = set()
        self.namespaces: dict[str, list[int]] = {}  # name -> the pids in it
        self.history: list[str] = []

    # --- test setup: what the node had before the agent came -------------------------------------
    def add_link(self, name: str, *addresses: str, kind: str = "ether", up: bool = True) -> None:
        self.links[name] = FakeLink(kind, up, [IPv4Interface(a) for a in addresses])

    # --- the Netlink protocol ---------------------------------------------------------------------
    def _link(self, name: str, operation: str) -> FakeLink:
        if name not in self.links:
            raise NetlinkError(operation, errno.ENODEV, f"no link {name!r}")
        return self.links[name]

    def ensure_bridge(self, name: str) -> bool:
        made = name not in self.links
        if made:
            self.links[name] = FakeLink("bridge")
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

    def delete_netns(self, name: str) -> None:
        operation = f"netns delete {name}"
        check_netns_name(name, operation)
        if self.namespaces.pop(name, None) is None:
            raise NetlinkError(operation, errno.ENOENT)
        self.history.append(operation)

    def netns_pids(self, name: str) -> list[int]:
        operation = f"netns pids {name}"
        check_netns_name(name, operation)
        if name not in self.namespaces:
            raise NetlinkError(operation, errno.ENOENT)
        return list(self.namespaces[name])
