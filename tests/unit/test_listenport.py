"""Ports chosen for servers that start later lie outside the kernel's ephemeral range, where no
outgoing connection can be given them before the server binds."""

from __future__ import annotations

import random
import socket

import pytest

from servicekit import listenport


def test_the_range_is_read_as_the_kernel_writes_it() -> None:
    assert listenport.ephemeral_range("32768\t60999\n") == (32768, 60999)
    assert listenport.ephemeral_range("1024 65535") == (1024, 65535)
    assert listenport.ephemeral_range("garbage") == listenport.DEFAULT_EPHEMERAL


def test_candidates_leave_out_the_ephemeral_range_and_the_registered_ports() -> None:
    ports = listenport.candidates((32768, 60999))
    assert min(ports) == listenport.LOWEST and max(ports) == 65535
    assert 32767 in ports and 61000 in ports
    assert not [p for p in ports if 32768 <= p <= 60999]


def test_chosen_ports_are_distinct_outside_the_range_and_bindable() -> None:
    low, high = listenport.ephemeral_range()
    ports = listenport.unused_ports(20)
    assert len(set(ports)) == 20
    for port in ports:
        assert port >= listenport.LOWEST and not low <= port <= high
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))


def test_a_port_a_server_holds_is_never_chosen() -> None:
    held = listenport.unused_port()
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", held))
        server.listen()

        class HeldFirst(random.Random):
            """Offers the held port before any other."""

            def sample(self, population, k, *, counts=None):  # type: ignore[no-untyped-def]
                rest = [p for p in population if p != held]
                return [held, *super().sample(rest, k - 1)]

        chosen = listenport.unused_ports(3, rng=HeldFirst(1))
    assert held not in chosen and len(chosen) == 3


def test_no_free_port_is_a_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(listenport, "_bindable", lambda host, port: False)
    with pytest.raises(listenport.NoFreePort, match="outside the ephemeral range"):
        listenport.unused_port()
