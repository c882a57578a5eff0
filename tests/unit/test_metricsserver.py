"""/metrics on a port another process holds: the service says so and serves once it is free."""

from __future__ import annotations

import argparse
import asyncio
import socket
import urllib.request
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Gauge

from servicekit import listenport
from servicekit.metricsserver import metrics_address, serve_metrics, split_address, stop_serving


class RecordingLog:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def info(self, event: str, **kw: Any) -> None:
        self.events.append(("info", event, kw))

    def error(self, event: str, **kw: Any) -> None:
        self.events.append(("error", event, kw))


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return str(reply.read().decode())


async def test_a_held_port_is_tried_again_until_it_is_free() -> None:
    registry = CollectorRegistry()
    Gauge("virtbus_test_up", "a gauge to find", registry=registry).set(7)
    port, log = listenport.unused_port(), RecordingLog()
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", port))
    holder.listen()
    serving = asyncio.create_task(serve_metrics(f"127.0.0.1:{port}", registry, log, retry_s=0.05))
    try:
        await asyncio.sleep(0.3)
        assert not serving.done()  # neither served nor given up
        errors = [e for e in log.events if e[0] == "error"]
        assert errors and errors[0][2]["address"] == f"127.0.0.1:{port}"
        assert len(errors) == 1  # said once, not at every try
    finally:
        holder.close()
    served = await asyncio.wait_for(serving, 5)
    try:
        assert "virtbus_test_up 7.0" in await asyncio.to_thread(scrape, port)
        assert log.events[-1][:2] == ("info", "metrics") and log.events[-1][2]["tries"] > 1
    finally:
        await stop_serving(serving)
    assert not served.thread.is_alive()  # nothing left running in this process
    with pytest.raises(OSError):
        scrape(port)  # and the port freed


async def test_a_stop_while_the_port_is_held_ends_the_retries() -> None:
    port = listenport.unused_port()
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", port))
        holder.listen()
        serving = asyncio.create_task(serve_metrics(f"127.0.0.1:{port}", CollectorRegistry(), RecordingLog(),
                                                    retry_s=0.05))
        await asyncio.sleep(0.1)
        await stop_serving(serving)
        assert serving.cancelled()


async def test_an_address_not_this_hosts_is_an_error_at_once() -> None:
    log = RecordingLog()
    with pytest.raises(OSError):
        await asyncio.wait_for(serve_metrics("192.0.2.1:9100", CollectorRegistry(), log, retry_s=0.05), 5)
    assert [e[1] for e in log.events] == ["metrics address unusable; /metrics not served"]


@pytest.mark.parametrize("text", ["host:", "host:http", "127.0.0.1:0", "127.0.0.1:70000"])
def test_a_bad_address_is_refused_before_anything_starts(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not HOST:PORT"):
        metrics_address(text)


def test_addresses_split_as_written() -> None:
    assert split_address("127.0.0.1:9100") == ("127.0.0.1", 9100)
    assert split_address(":9100") == ("127.0.0.1", 9100)
    assert split_address("9100") == ("127.0.0.1", 9100)  # a port alone: loopback, as before
    assert split_address("[::1]:9100") == ("::1", 9100)
