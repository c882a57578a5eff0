"""The node's links, addresses, routes and named network namespaces, over netlink: the
few operations the handler and the launcher need, behind one narrow ``Netlink`` protocol, so their
decisions are tested against ``servicekit.fake_netlink.FakeNetlink`` and only this module (with
``servicekit.netlink_links``, its link half) talks to the kernel.

An adapter is bound to one network namespace (a name under /run/netns, or None: the caller's own)
for links, addresses and routes; the namespace operations (delete, pids) take the name they act on.
Every kernel refusal becomes a ``NetlinkError``: the operation, the errno, and (by its code)
whether a retry can help. The fake raises the same errors for the same mistakes.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from socket import AF_INET
from typing import Any, Protocol, TypeVar

from pyroute2 import IPRoute
from pyroute2 import config as pyroute2_config
from pyroute2.netlink.exceptions import NetlinkError as KernelError

from proto.errors import ApiError, Code
from servicekit import netlink_links as links
from servicekit import netns_names, netns_socket, rtnl, vlanports
from servicekit.netlink_links import LinkKind
from servicekit.rtnl_socket import RtnlSocket

# Where pyroute2 forks a child (its own netns helpers; this module makes namespaces itself, see
# servicekit.netns_names, and enters them by thread) it stops it with SIGTERM. A child still alive
# then runs the handler it inherited: with an asyncio signal handler in the parent, that writes
# SIGTERM to the loop's wakeup fd, which the child shares, and the parent acts on a SIGTERM it never
# got (a launcher cancelled its own boot). This makes such a child take SIGTERM with the default action.
pyroute2_config.disable_mp_signal = True

NETNS_DIR = netns_names.NETNS_DIR  # where ip(8) and pyroute2 bind-mount named namespaces

# What each errno says about the failed operation; anything else is Internal (no retry).
_CODES = {
    errno.EEXIST: Code.ALREADY_EXISTS,
    errno.ENOENT: Code.NOT_FOUND,  # a netns name with nothing under /run/netns
    errno.ENODEV: Code.NOT_FOUND,  # no such link
    errno.ESRCH: Code.NOT_FOUND,  # no such route
    errno.EADDRNOTAVAIL: Code.NOT_FOUND,  # no such address on the link
    errno.ENETUNREACH: Code.INVALID,  # a gateway on no connected network: the same call fails again
    errno.EINVAL: Code.INVALID,
    errno.EOPNOTSUPP: Code.INVALID,
    errno.EPERM: Code.FORBIDDEN,
    errno.EACCES: Code.FORBIDDEN,
    errno.EBUSY: Code.UNAVAILABLE,  # transient: the same call may well work in a moment
    errno.EAGAIN: Code.UNAVAILABLE,
    errno.ENOBUFS: Code.UNAVAILABLE,
    errno.ETIMEDOUT: Code.UNAVAILABLE,
    errno.EINTR: Code.UNAVAILABLE,
}

RT_SCOPE_LINK = 253  # a route straight onto a link, as ip(8) gives one with no gateway
RT_SCOPE_NOWHERE = 255  # in a delete: match whatever scope the route has, as ip(8) does
RTPROT_BOOT = 3  # the protocol ip(8) marks its routes with; kept so `ip route` shows them as before


class NetlinkError(ApiError):
    """A netlink operation that failed: ``operation`` says what was asked (``route replace
    10.244.1.0/24 via 10.99.0.12``), ``errno`` the kernel's answer; ``retryable`` whether trying
    the same again may help."""

    def __init__(self, operation: str, err: int, detail: str | None = None) -> None:
        self.operation = operation
        self.errno = err
        super().__init__(_CODES.get(err, Code.INTERNAL), f"{operation}: {detail or os.strerror(err)}")


@dataclass(frozen=True)
class Address:
    """An IPv4 address held by a link."""
    link: str
    interface: IPv4Interface


class Netlink(Protocol):
    """What the node agent does to its namespace's network. All of it blocks: call it from a thread."""

    def ensure_bridge(self, name: str) -> bool:
        """The bridge exists and is up; True if it was made now. A link of that name that is no
        bridge is taken as it is (as ``ip link add`` failing with "File exists" was)."""

    def add_address(self, link: str, address: IPv4Interface) -> None:
        """ALREADY_EXISTS if the link has it."""

    def replace_address(self, link: str, address: IPv4Interface) -> None:
        """Added, or left as it is if there."""

    def delete_address(self, link: str, address: IPv4Interface) -> None:
        """NOT_FOUND if the link does not have it."""

    def addresses(self) -> list[Address]:
        """Every IPv4 address of every link."""

    def replace_route(self, dst: IPv4Network, *, via: IPv4Address | None = None, link: str | None = None) -> None:
        """The one route to ``dst`` goes via a gateway (INVALID if no connected network holds it),
        onto a link, or both."""

    def delete_route(self, dst: IPv4Network, *, link: str | None = None) -> None:
        """NOT_FOUND if there is no route to ``dst`` (onto ``link``, if given)."""

    def flush_neighbours(self, address: IPv4Address, link: str) -> None:
        """Forget the link's neighbour entry for the address, if any (permanent ones stay)."""

    def create_link(self, name: str, kind: LinkKind) -> None:
        """A new link, down; ALREADY_EXISTS if the name is taken, INVALID if the kernel has no such kind
        (some have no dummy links)."""

    def create_veth(self, name: str, peer: str, peer_netns: str | None) -> None:
        """A veth pair, both ends down: ``name`` here, ``peer`` in the named namespace (None: the
        caller's own). ALREADY_EXISTS if either name is taken, NOT_FOUND if that namespace is missing."""

    def create_tap(self, name: str) -> None:
        """A persistent tap, down, for QEMU to open later; ALREADY_EXISTS if the name is taken."""

    def delete_link(self, name: str) -> None:
        """NOT_FOUND if there is no such link."""

    def set_up(self, link: str, up: bool = True) -> None:
        """The link up (or down)."""

    def set_mac(self, link: str, mac: str) -> None:
        """A new hardware address; a multicast one is refused (EADDRNOTAVAIL, as the kernel does)."""

    def set_master(self, link: str, master: str) -> None:
        """The link becomes a port of the bridge ``master`` (INVALID if that is no bridge)."""

    def set_port(self, link: str, *, hairpin: bool | None = None, learning: bool | None = None) -> None:
        """Bridge port flags of a link; INVALID if it is no bridge's port."""

    def set_access_vlan(self, link: str, vid: int) -> None:
        """``link``, a bridge's port, becomes an access port of VLAN ``vid`` on that bridge, which
        filters no VLANs itself (servicekit.vlanports); INVALID if the kernel cannot."""

    def link_mac(self, link: str) -> str:
        """The link's hardware address, lower-case, colon-separated."""

    def flush_addresses(self, link: str) -> None:
        """Every address of the link removed (of every family)."""

    def create_netns(self, name: str) -> None:
        """A new named namespace (only its lo, down); ALREADY_EXISTS if the name is taken."""

    def delete_netns(self, name: str) -> None:
        """Remove the named namespace (it lives on while a process is in it); NOT_FOUND if missing."""

    def netns_pids(self, name: str) -> list[int]:
        """The processes in the named namespace; NOT_FOUND if missing."""


NetnsAdapter = Callable[[str | None], Netlink]  # a namespace's name (None: the caller's own) -> its adapter


def check_netns_name(name: str, operation: str) -> None:
    """A namespace name is a file name under /run/netns, never a path (as ip(8) checks)."""
    if not name or name in (".", "..") or "/" in name or "\0" in name or len(name) > 255:
        raise NetlinkError(operation, errno.EINVAL, f"{name!r} is not a namespace name")


T = TypeVar("T")


class KernelNetlink:
    """The real adapter. Each call opens its own netlink socket (in the namespace, which the calling
    thread enters for the call) and closes it: a socket is never shared between the threads
    ``asyncio.to_thread`` runs these calls in. Requests are written as ip(8) writes them
    (``servicekit.rtnl``); the dumps (addresses, neighbours, an address flush) are parsed by pyroute2."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns

    def _call(self, operation: str, work: Callable[[RtnlSocket], T]) -> T:
        def call() -> T:
            with RtnlSocket() as sock:
                return work(sock)

        return self._in_netns(operation, call)

    def _dump(self, operation: str, work: Callable[[Any], T]) -> T:
        def call() -> T:
            ipr = IPRoute()  # in whatever namespace this thread is in (see _in_netns)
            try:
                return work(ipr)
            finally:
                ipr.close()

        return self._in_netns(operation, call)

    def _in_netns(self, operation: str, call: Callable[[], T]) -> T:
        if _in_event_loop():  # the calls block (pyroute2's runs a loop of its own), and would stall ours
            raise RuntimeError(f"{operation}: netlink calls block; make them in a thread (asyncio.to_thread)")
        try:
            if self.netns is None:
                return call()
            check_netns_name(self.netns, operation)
            if not (NETNS_DIR / self.netns).exists():
                raise NetlinkError(operation, errno.ENOENT, f"no network namespace {self.netns!r}")
            # This thread enters the namespace for the call (socket, taps and all) and comes back:
            # no child process forked into it per call (pyroute2's NetNS), which cost launches dearly.
            return netns_socket.run_in(self.netns, call)
        except KernelError as exc:
            raise NetlinkError(operation, exc.code) from None
        except rtnl.WireError as exc:  # a name or value no request can carry: the kernel never saw it
            raise NetlinkError(operation, errno.EINVAL, str(exc)) from None
        except OSError as exc:  # TimeoutError included: the kernel did not answer in time
            raise NetlinkError(operation, exc.errno or errno.ETIMEDOUT, exc.strerror) from None
        except RuntimeError as exc:  # pyroute2's helper process in the namespace died: try again
            raise NetlinkError(operation, errno.EAGAIN, str(exc)) from None

    def ensure_bridge(self, name: str) -> bool:
        def work(sock: RtnlSocket) -> bool:
            try:
                links.add_link(sock, name, "bridge")
                made = True
            except OSError as exc:
                if exc.errno != errno.EEXIST:
                    raise
                made = False
            sock.call(lambda seq: rtnl.set_link(seq, name, up=True))
            return made

        return self._call(f"bridge {name} up", work)

    def _address(self, command: str, link: str, address: IPv4Interface) -> None:
        def work(sock: RtnlSocket) -> None:
            at = sock.index(link)
            sock.call(lambda seq: rtnl.address(seq, command, at, address))

        self._call(f"addr {command} {address} dev {link}", work)

    def add_address(self, link: str, address: IPv4Interface) -> None:
        self._address("add", link, address)

    def replace_address(self, link: str, address: IPv4Interface) -> None:
        self._address("replace", link, address)

    def delete_address(self, link: str, address: IPv4Interface) -> None:
        self._address("del", link, address)

    def addresses(self) -> list[Address]:
        def work(ipr: Any) -> list[Address]:
            names = {int(msg["index"]): str(msg.get("ifname")) for msg in ipr.get_links()}
            out = []
            for msg in ipr.get_addr(family=AF_INET):
                # IFA_LOCAL is the address itself (IFA_ADDRESS is the peer on a point-to-point link)
                local = msg.get("local") or msg.get("address")
                out.append(Address(names.get(int(msg["index"]), ""), IPv4Interface(f"{local}/{msg['prefixlen']}")))
            return out

        return self._dump("addr show", work)

    def replace_route(self, dst: IPv4Network, *, via: IPv4Address | None = None, link: str | None = None) -> None:
        operation = " ".join(["route replace", str(dst), *(["via", str(via)] if via else []),
                              *(["dev", link] if link else [])])
        if via is None and link is None:
            raise NetlinkError(operation, errno.EINVAL, "a route needs a gateway or a link")

        def work(sock: RtnlSocket) -> None:
            oif = sock.index(link) if link is not None else None
            sock.call(lambda seq: rtnl.route(seq, "replace", dst, via=via, oif=oif, protocol=RTPROT_BOOT,
                                             scope=RT_SCOPE_LINK if via is None else 0))

        self._call(operation, work)

    def delete_route(self, dst: IPv4Network, *, link: str | None = None) -> None:
        def work(sock: RtnlSocket) -> None:
            oif = sock.index(link) if link is not None else None
            sock.call(lambda seq: rtnl.route(seq, "del", dst, oif=oif, scope=RT_SCOPE_NOWHERE))

        self._call(" ".join(["route del", str(dst), *(["dev", link] if link else [])]), work)

    def flush_neighbours(self, address: IPv4Address, link: str) -> None:
        # The one entry asked for, not a dump of every link and neighbour through pyroute2, which grew
        # with the VMs on the bridge (bench/pod_plumbing.py --pods 100: 4.89 ms a launch, now 0.11).
        def work(sock: RtnlSocket) -> None:
            at = sock.index(link)
            try:
                found = sock.call(lambda seq: rtnl.neighbour(seq, "get", at, address))
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    return  # nothing to forget
                raise
            if found.kind != rtnl.RTM_NEWNEIGH or rtnl.neighbour_state(found.body) & (
                    rtnl.NUD_NOARP | rtnl.NUD_PERMANENT):
                return  # set by hand, or not learnt: stays
            try:
                sock.call(lambda seq: rtnl.neighbour(seq, "del", at, address))
            except OSError as exc:
                if exc.errno != errno.ENOENT:  # gone meanwhile: as wanted
                    raise

        self._call(f"neigh flush to {address} dev {link}", work)

    # --- links (servicekit.netlink_links does the work on the open socket) ---------------------------
    def create_link(self, name: str, kind: LinkKind) -> None:
        self._call(f"link add {name} type {kind}", lambda sock: links.add_link(sock, name, kind))

    def create_veth(self, name: str, peer: str, peer_netns: str | None) -> None:
        operation = f"link add {name} type veth peer name {peer} netns {peer_netns or 'self'}"
        if peer_netns is not None:
            check_netns_name(peer_netns, operation)
        if peer_netns is not None:
            self._call(operation, lambda sock: links.add_veth(sock, name, peer, str(NETNS_DIR / peer_netns)))
            return
        # the caller's own namespace, held open before this thread enters the adapter's: one path for both
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            self._call(operation, lambda sock: links.add_veth(sock, name, peer, f"/proc/self/fd/{own}"))
        finally:
            os.close(own)

    def create_tap(self, name: str) -> None:
        self._call(f"tuntap add dev {name} mode tap", lambda sock: links.add_tap(sock, name))

    def delete_link(self, name: str) -> None:
        self._call(f"link del {name}", lambda sock: sock.call(lambda seq: rtnl.del_link(seq, name)))

    def set_up(self, link: str, up: bool = True) -> None:
        self._call(f"link set {link} {'up' if up else 'down'}",
                   lambda sock: sock.call(lambda seq: rtnl.set_link(seq, link, up=up)))

    def set_mac(self, link: str, mac: str) -> None:
        self._call(f"link set {link} address {mac}",
                   lambda sock: sock.call(lambda seq: rtnl.set_link(seq, link, mac=rtnl.mac_bytes(mac))))

    def set_master(self, link: str, master: str) -> None:
        def work(sock: RtnlSocket) -> None:
            at = sock.index(master)
            sock.call(lambda seq: rtnl.set_link(seq, link, master=at))

        self._call(f"link set {link} master {master}", work)

    def set_port(self, link: str, *, hairpin: bool | None = None, learning: bool | None = None) -> None:
        flags = [f"{key} {'on' if value else 'off'}" for key, value in (("hairpin", hairpin), ("learning", learning))
                 if value is not None]
        self._call(" ".join(["link set", link, "type bridge_slave", *flags]),
                   lambda sock: links.set_port(sock, link, hairpin=hairpin, learning=learning))

    def set_access_vlan(self, link: str, vid: int) -> None:
        self._dump(f"vlan access port {link} vid {vid}", lambda ipr: vlanports.attach(ipr, link, vid))

    def link_mac(self, link: str) -> str:
        return self._call(f"link show {link}", lambda sock: links.mac(sock, link))

    def flush_addresses(self, link: str) -> None:
        self._dump(f"addr flush dev {link}", lambda ipr: links.flush_addresses(ipr, link))

    # --- named namespaces: files under /run/netns, whatever namespace this adapter is bound to -------
    def create_netns(self, name: str) -> None:
        operation = f"netns add {name}"
        check_netns_name(name, operation)
        try:
            netns_names.create(name, NETNS_DIR)  # by this thread, which comes back (servicekit.netns_names)
        except OSError as exc:
            raise NetlinkError(operation, exc.errno or errno.EIO, exc.strerror) from None

    def delete_netns(self, name: str) -> None:
        operation = f"netns delete {name}"
        check_netns_name(name, operation)
        try:
            netns_names.remove(name, NETNS_DIR)  # detach the bind mount, unlink the name: what `ip netns delete` does
        except OSError as exc:
            raise NetlinkError(operation, exc.errno or errno.EIO, exc.strerror) from None

    def netns_pids(self, name: str) -> list[int]:
        operation = f"netns pids {name}"
        check_netns_name(name, operation)
        try:
            ns = (NETNS_DIR / name).stat()
        except OSError as exc:
            raise NetlinkError(operation, exc.errno or errno.EIO, exc.strerror) from None
        return [pid for pid in _pids() if _netns_of(pid) == (ns.st_dev, ns.st_ino)]


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _pids() -> list[int]:
    return sorted(int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit())


def _netns_of(pid: int) -> tuple[int, int] | None:
    """The (device, inode) of the process's network namespace, as `ip netns pids` compares them."""
    try:
        st = os.stat(f"/proc/{pid}/ns/net")
    except OSError:  # gone meanwhile, or a kernel thread
        return None
    return st.st_dev, st.st_ino
