"""The CLI's listeners (vnc --proxy-only --port, console-web --listen): a malformed, taken or foreign
address is a typed error naming the flag."""

from __future__ import annotations

import argparse
import asyncio
import socket

import pytest

from ctl.listening import listen, listen_address, port_number
from proto.errors import ApiError, Code


async def nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


@pytest.mark.parametrize("text", ["8080", "host:http", "127.0.0.1:-1", "127.0.0.1:65536", "127.0.0.1:"])
def test_a_malformed_address_is_refused_by_the_parser(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        listen_address(text)


def test_addresses_and_ports_read_as_written() -> None:
    assert listen_address("0.0.0.0:8080") == ("0.0.0.0", 8080)
    assert listen_address(":0") == ("127.0.0.1", 0)
    assert listen_address("[::1]:5900") == ("::1", 5900)
    assert port_number("0") == 0
    with pytest.raises(argparse.ArgumentTypeError, match="out of range"):
        port_number("70000")


async def test_a_taken_port_is_a_typed_error_naming_the_flag() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ApiError) as caught:
            await listen(nothing, "127.0.0.1", port, "--listen")
    assert caught.value.code is Code.INVALID and caught.value.field == "--listen"
    assert f"cannot listen on 127.0.0.1:{port}" in str(caught.value)


async def test_an_address_not_this_hosts_is_a_typed_error() -> None:
    with pytest.raises(ApiError, match="cannot listen on 192.0.2.1:8080"):
        await listen(nothing, "192.0.2.1", 8080, "--listen")


async def test_a_free_address_listens() -> None:
    server = await listen(nothing, "127.0.0.1", 0, "--port")
    async with server:
        assert server.sockets[0].getsockname()[1] > 0
