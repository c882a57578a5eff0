"""``virtbus port-forward vm/NAME [udp/][LOCAL:]REMOTE...``: a VM's TCP and UDP ports on this host, as
``virtctl port-forward`` gives them; ``--stdio`` joins a TCP one to standard input and output (ssh's
ProxyCommand, as ``virtctl ssh`` uses it). Each TCP connection, and each UDP client address
(ctl.udpforward), is a session (proto.portforward) with the handler of the VM's node, which connects
to the guest's port.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import stat
import sys
from typing import Any, NamedTuple

from ctl.client import ApiClient
from ctl.listening import listen
from ctl.udpforward import UdpForward
from ctl.vnc import running_node
from proto import subjects
from proto.errors import ApiError, Code
from proto.portforward import UDP_IDLE_S, PortForwardOpen, PortForwardOpened
from proto.schema import Namespace
from servicekit.datagramend import DatagramEnd, QueueDatagramEnd
from servicekit.tunnelpump import HalfClosingEnd, Inbound, StreamEnd, ended_cleanly, run_port_tunnel

TARGET_KINDS = ("vm", "vms", "virtualmachine", "vmi", "vmis", "virtualmachineinstance")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("port-forward", help="a VM's TCP and UDP ports on this host (virtctl port-forward)")
    p.add_argument("target", help="vm/NAME (or vmi/NAME, or NAME)")
    p.add_argument("ports", nargs="+", help="[tcp/|udp/][LOCAL:]REMOTE: LOCAL on this host to REMOTE of the guest "
                                            "(LOCAL 0 or left out before ':': a free port; one port: the same)")
    p.add_argument("--address", default="127.0.0.1", help="where to listen (default 127.0.0.1)")
    p.add_argument("--stdio", action="store_true",
                   help="one TCP port, joined to stdin and stdout (ssh ProxyCommand)")


def target_name(text: str) -> str:
    """NAME, TYPE/NAME or virtctl's TYPE/NAME/NAMESPACE (the namespace the one virtbus has)."""
    kind, sep, rest = text.partition("/")
    if not sep:
        return text
    name, sep, namespace = rest.partition("/")
    if kind.lower() not in TARGET_KINDS or not name:
        raise ApiError(Code.BAD_REQUEST, f"{text!r}: port-forward takes vm/NAME or vmi/NAME", "target")
    if sep:
        Namespace().walk(namespace, "target")
    return name


class PortPair(NamedTuple):
    local: int  # 0: a free one
    remote: int
    protocol: str = "TCP"  # or "UDP"


def port_pair(text: str) -> PortPair:
    """[LOCAL:]REMOTE as kubectl writes it, with virtctl's PROTOCOL/ before it (udp/5353:53) or a
    /PROTOCOL after it (53/udp); TCP when neither is written."""
    first, _, second = text.partition("/")
    spec, protocol = (second, first) if first.lower() in ("tcp", "udp") else (first, second)
    if protocol.lower() not in ("", "tcp", "udp"):
        raise ApiError(Code.INVALID, f"{text!r}: TCP or UDP is forwarded", "ports")
    local, sep, remote = spec.rpartition(":")
    try:
        remote_port = int(remote)
        local_port = (int(local) if local else 0) if sep else remote_port
    except ValueError:
        raise ApiError(Code.BAD_REQUEST, f"{text!r} is not [LOCAL:]REMOTE", "ports") from None
    if not 1 <= remote_port <= 65535 or not 0 <= local_port <= 65535:
        raise ApiError(Code.INVALID, f"{text!r}: ports are 1-65535 (a local 0: a free one)", "ports")
    return PortPair(local_port, remote_port, protocol.upper() or "TCP")


async def tunnel(api: ApiClient, name: str, port: int, local: HalfClosingEnd | DatagramEnd) -> str:
    """One connection (or UDP flow) joined to a new session with port of the VM's guest; returns why
    it ended."""
    protocol = "UDP" if isinstance(local, DatagramEnd) else "TCP"
    try:
        node = await running_node(api, name)
        session = secrets.token_hex(16)
        inbound = await Inbound.subscribe(api.nc, subjects.portforward_session(node, name, session, "down"))
        try:
            await api.request(subjects.portforward_open(node, name),
                              PortForwardOpen(session=session, port=port, protocol=protocol),
                              PortForwardOpened, f"handler of {node}", "is the node's handler up?")
        except BaseException:
            await inbound.unsubscribe()
            raise
    except BaseException:
        await local.close()
        raise
    return await run_port_tunnel(api.nc, local, inbound, subjects.portforward_session(node, name, session, "up"))


class StdioEnd:
    """Standard input and output as one connection's end: the end of input is passed on as a
    half-close (the guest reads its EOF and still answers), and the guest's is the end of output."""

    def __init__(self, reader: asyncio.StreamReader | None) -> None:
        self.reader = reader  # None: standard input is a file, read in a thread (it never waits long)

    @classmethod
    async def open(cls) -> StdioEnd:
        mode = os.fstat(0).st_mode
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(0)):
            return cls(None)
        reader = asyncio.StreamReader()
        # a copy of the descriptor: the transport closes what it holds, standard input stays
        pipe = os.fdopen(os.dup(0), "rb", buffering=0)
        await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
        return cls(reader)

    async def read(self, n: int) -> bytes:
        return await (self.reader.read(n) if self.reader is not None else asyncio.to_thread(os.read, 0, n))

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[await asyncio.to_thread(os.write, 1, view):]

    async def write_eof(self) -> None:
        """The guest sends no more: standard output ends (its reader, ssh say, sees EOF) while
        input may still go to the guest. /dev/null takes its place, so descriptor 1 stays valid."""
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, 1)
        finally:
            os.close(null)

    async def close(self) -> None:
        pass  # standard input and output are this process's: they end with it


async def forward(api: ApiClient, name: str, pairs: list[PortPair], address: str,
                  announce: Any = print, udp_idle_s: float = UDP_IDLE_S) -> None:
    """Serve every pair on address until interrupted; announce each listening port."""
    await running_node(api, name)  # say it at once when the VM does not run
    servers = []
    flows: list[UdpForward] = []
    try:  # a port that cannot be listened on closes those opened before it, too
        for local, remote, protocol in pairs:
            if protocol == "UDP":
                async def flow(end: QueueDatagramEnd, remote: int = remote) -> str:
                    return await tunnel(api, name, remote, end)

                udp = await UdpForward.listen(flow, f"{name}:{remote}/udp", address, local, udp_idle_s)
                flows.append(udp)
                announce(f"Forwarding from {address}:{udp.port} -> {remote}/udp")
                continue

            async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                                 remote: int = remote) -> None:
                try:
                    why = await tunnel(api, name, remote, StreamEnd(reader, writer))
                except ApiError as exc:
                    why = str(exc)
                print(f"port-forward: a connection to {name}:{remote} ended: {why}", file=sys.stderr)

            server = await listen(connection, address, local, "ports")
            servers.append(server)
            announce(f"Forwarding from {address}:{server.sockets[0].getsockname()[1]} -> {remote}")
        await asyncio.gather(*(s.serve_forever() for s in servers), *(f.closed.wait() for f in flows))
    finally:
        for s in servers:
            s.close()
        for f in flows:
            await f.close()


async def run(api: ApiClient, args: argparse.Namespace) -> int:
    name = target_name(args.target)
    pairs = [port_pair(p) for p in args.ports]
    if args.stdio:
        if len(pairs) != 1:
            raise ApiError(Code.BAD_REQUEST, "--stdio forwards one port", "ports")
        if pairs[0].protocol != "TCP":
            raise ApiError(Code.BAD_REQUEST, "--stdio forwards a TCP port (a stream has no datagrams)", "ports")
        why = await tunnel(api, name, pairs[0][1], await StdioEnd.open())
        if not ended_cleanly(why):
            print(f"port-forward: {why}", file=sys.stderr)
            return 1
        return 0
    await forward(api, name, pairs, args.address, lambda line: print(line, flush=True))
    return 0
