"""Choosing a port for a server that starts later: one the kernel never hands to outgoing connections.

A port found free by binding port 0 comes from the ephemeral range, the one the kernel also draws
the local ports of outgoing connections from. Between choosing it and the server's bind, any client
on the host (a NATS connection, a test's HTTP request) may be given it, and the server then fails
with "address in use": a lab's handler did so, taking its node down. Ports below that range are
never given out that way, so only another server choosing the same one can collide, and the check
here catches one that already holds it."""

from __future__ import annotations

import random
import socket
from pathlib import Path

RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST = 10000  # below: well-known and registered services' ports, as likely taken as not
DEFAULT_EPHEMERAL = (32768, 60999)  # Linux's default, when /proc does not say
TRIES = 200


class NoFreePort(RuntimeError):
    """No port outside the ephemeral range could be bound."""


def ephemeral_range(text: str | None = None) -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (first and last, inclusive)."""
    if text is None:
        try:
            text = RANGE_FILE.read_text()
        except OSError:
            return DEFAULT_EPHEMERAL
    try:
        low, high = (int(field) for field in text.split())
    except ValueError:
        return DEFAULT_EPHEMERAL
    return low, high


def candidates(ephemeral: tuple[int, int]) -> list[int]:
    """Every port from LOWEST up that lies outside the ephemeral range."""
    low, high = ephemeral
    return [p for p in range(LOWEST, 65536) if not low <= p <= high]


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind: TIME_WAIT is no hold
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def unused_ports(count: int, host: str = "127.0.0.1", *, rng: random.Random | None = None) -> list[int]:
    """count distinct ports, none in the ephemeral range, each bindable on host now. Chosen at random,
    so two callers choosing at once (parallel labs and tests) rarely pick the same."""
    pool = candidates(ephemeral_range())
    pick = rng or random.SystemRandom()
    chosen: list[int] = []
    for port in pick.sample(pool, min(len(pool), TRIES + count)):
        if port not in chosen and _bindable(host, port):
            chosen.append(port)
            if len(chosen) == count:
                return chosen
    raise NoFreePort(f"no {count} free ports on {host} outside the ephemeral range {ephemeral_range()}")


def unused_port(host: str = "127.0.0.1") -> int:
    return unused_ports(1, host)[0]
