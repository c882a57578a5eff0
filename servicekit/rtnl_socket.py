"""A route netlink socket that sends ``servicekit.rtnl``'s requests and waits for the kernel's
answer to each: the I/O half of the requests a launch makes. Made by a thread inside the namespace
it is to act in (a netlink socket belongs to the namespace it was made in), used by that thread,
closed after its few requests.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable
from types import TracebackType

from servicekit import rtnl

SOL_NETLINK = 270
NETLINK_CAP_ACK, NETLINK_EXT_ACK = 10, 11  # errors echo only the request's header / carry the kernel's words
TIMEOUT_S = 5.0  # the kernel answers at once; a socket that stays silent is a failure, not a wait


class RtnlSocket:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
        try:
            self.sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            self.sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
            self.sock.settimeout(TIMEOUT_S)
            self.sock.bind((0, 0))
        except BaseException:
            self.sock.close()
            raise
        self.seq = 0

    def call(self, request: Callable[[int], bytes]) -> rtnl.Answer:
        """Sends the request made for the next sequence number; returns the kernel's answer to it
        (an acknowledgement, or the one reply of a get). OSError with the kernel's errno (and its
        words, where it gave some) if it refused."""
        self.seq += 1
        seq = self.seq
        self.sock.send(request(seq))
        while True:
            data = self.sock.recv(65536)
            for answer in rtnl.answers(data):
                if answer.seq != seq:
                    continue  # an answer to an earlier request that gave up waiting: not ours
                if answer.kind == rtnl.NLMSG_ERROR and answer.error:
                    raise OSError(answer.error, answer.detail or os.strerror(answer.error))
                return answer

    def index(self, name: str) -> int:
        return self.link(name).index

    def link(self, name: str) -> rtnl.Link:
        answer = self.call(lambda seq: rtnl.get_link(seq, name))
        if answer.kind != rtnl.RTM_NEWLINK:
            raise OSError(errno.EPROTO, f"link {name!r}: an answer of type {answer.kind}")
        return rtnl.link_of(answer.body)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RtnlSocket:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
