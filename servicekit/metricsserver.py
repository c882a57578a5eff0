"""Serving a process's /metrics without letting a taken port end the process.

A node agent or scheduler that exits because its metrics port is held would take down what
matters (its node's VMs' care, the binds) for the sake of a scrape. So the address is tried again
until it is free, with an error logged, as Prometheus' own target page would show the scrape failing."""

from __future__ import annotations

import argparse
import asyncio
import errno
import threading
from dataclasses import dataclass
from typing import Any, Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

RETRY_S = 5.0
BUSY = (errno.EADDRINUSE,)


class Log(Protocol):
    def info(self, event: str, **kw: Any) -> Any: ...
    def error(self, event: str, **kw: Any) -> Any: ...


@dataclass(frozen=True)
class Served:
    """The /metrics server running in its own thread, until closed."""

    httpd: WSGIServer
    thread: threading.Thread

    def close(self) -> None:
        """Stops serving and frees the port (a process's stop, a test's end)."""
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def split_address(address: str) -> tuple[str, int]:
    """HOST:PORT (HOST may be empty: loopback) -> (host, port); ValueError if PORT is no port."""
    host, _, port = address.rpartition(":")
    number = int(port)
    if not 0 < number < 65536:
        raise ValueError(f"metrics address {address!r}: port {number} out of range")
    return host.strip("[]") or "127.0.0.1", number


def metrics_address(text: str) -> str:
    """argparse's check of --metrics-address: a bad one is refused before anything starts."""
    try:
        split_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT ({exc})") from None
    return text


async def serve_metrics(address: str, registry: CollectorRegistry, log: Log, *,
                        retry_s: float = RETRY_S) -> Served:
    """Serve registry at address, trying again every retry_s while another process holds it; returns
    once it is served (its HTTP server runs on in a thread of its own until closed). Other errors (an
    address not this host's) are logged and raise: trying again would not mend them."""
    host, port = split_address(address)
    tries = 0
    while True:
        try:
            httpd, thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            if exc.errno not in BUSY:
                log.error("metrics address unusable; /metrics not served", address=address, reason=str(exc))
                raise
            tries += 1
            if tries == 1 or tries % 12 == 0:  # said at once, then once a minute
                log.error("metrics address in use; trying again", address=address, tries=tries,
                          retry_in_s=retry_s)
            await asyncio.sleep(retry_s)
            continue
        log.info("metrics", url=f"http://{host}:{port}/metrics", tries=tries + 1)
        return Served(httpd, thread)


async def stop_serving(serving: asyncio.Task[Served] | None) -> None:
    """A process's stop: the server closed if it was up, the retries ended if it was not."""
    if serving is None:
        return
    if not serving.done():
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
    elif not serving.cancelled() and serving.exception() is None:
        await asyncio.to_thread(serving.result().close)
