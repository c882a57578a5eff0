"""A VM's TCP or UDP port reached over NATS, as ``virtctl port-forward`` reaches it (and ``virtctl ssh``
through it): a tunnel session per TCP connection or UDP flow (one client address), its frames and
window those of the VNC tunnel (proto.vnc, servicekit.tunnel). A UDP session carries each datagram
as one frame, so it arrives whole and alone; as UDP has no end, a flow no datagram crossed for
``UDP_IDLE_S`` ends (as a NAT forgets it).

A client opens a session on ``virtbus.portforward.<node>.<vmi>.open`` (request/reply) with a session id
it made up and the guest's port, having subscribed first to ``...<vmi>.<session>.down``; the node's
handler connects to the VMI's pod address and port in the node's network (as a node port's traffic
goes: a masquerade VM's ports reach its guest), subscribes to ``...<session>.up`` and only then replies.
The address is the VMI's own, never the client's word: a session reaches that VM's guest and nothing
else. Only a node's own handler may serve its subjects; an admin's credentials may open sessions.
"""

from __future__ import annotations

from proto.api import Message
from proto.errors import ApiError, Code
from proto.vnc import check_session

MAX_SESSIONS = 16  # per VMI, in its node's handler
CONNECT_TIMEOUT_S = 5.0  # a guest port that neither accepts nor refuses by then is unavailable
# conntrack forgets an answered UDP flow after 120 s (nf_conntrack_udp_timeout_stream), an unanswered
# one after 30 s: a minute between, and a client's new datagram after that opens a new session
UDP_IDLE_S = 60.0
PROTOCOLS = ("TCP", "UDP")


class PortForwardOpen(Message, frozen=True):
    session: str
    port: int
    protocol: str = "TCP"  # or "UDP" (either case, as virtctl writes it)


class PortForwardOpened(Message, frozen=True):
    session: str
    window: int


def check_open(req: PortForwardOpen) -> PortForwardOpen:
    """The request as a handler may act on it, or a typed error naming the field."""
    check_session(req.session)
    if not 1 <= req.port <= 65535:
        raise ApiError(Code.INVALID, f"port {req.port} is out of range (1-65535)", "port")
    if req.protocol.upper() not in PROTOCOLS:
        raise ApiError(Code.INVALID, f"protocol {req.protocol!r}: TCP or UDP is forwarded", "protocol")
    return PortForwardOpen(session=req.session, port=req.port, protocol=req.protocol.upper())
