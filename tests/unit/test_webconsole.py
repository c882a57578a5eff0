"""The web console's HTTP side (ctl.webconsole), on in-memory streams: the VM list, its pages, noVNC's
files and nothing outside them."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from ctl.client import ApiClient
from ctl.webconsole import WebConsole
from proto.api import VMIList
from proto.spec import VMSpec
from proto.state import VMI, Phase


class FakeApi:
    async def call(self, kind: str, verb: str, body: Any, reply: type[Any]) -> Any:
        assert (kind, verb, reply) == ("vmi", "list", VMIList)
        return VMIList(items=[VMI(name="testvm", uid="u", spec=VMSpec(name="testvm"), created_at=1.0,
                                  phase=Phase.RUNNING, node_name="node1")])


class Writer:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        pass

    def close(self) -> None:
        pass


async def get(request: bytes) -> tuple[str, bytes]:
    reader = asyncio.StreamReader()
    reader.feed_data(request)
    reader.feed_eof()
    writer = Writer()
    await WebConsole(cast(ApiClient, FakeApi())).handle(reader, cast(asyncio.StreamWriter, writer))
    head, _, body = writer.data.partition(b"\r\n\r\n")
    return head.decode(), body


async def test_the_list_links_each_vms_screen() -> None:
    head, body = await get(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head.startswith("HTTP/1.1 200")
    assert b'href="/screen/testvm"' in body and b"Running" in body and b"node1" in body
    head, body = await get(b"GET /screen/testvm HTTP/1.1\r\n\r\n")
    assert head.startswith("HTTP/1.1 200") and b'"/ws/testvm"' in body and b"/novnc/core/rfb.js" in body


async def test_novnc_files_are_served_and_nothing_beside_them() -> None:
    head, body = await get(b"GET /novnc/core/rfb.js HTTP/1.1\r\n\r\n")
    assert head.startswith("HTTP/1.1 200") and "text/javascript" in head and b"export default class RFB" in body
    for path in (b"/novnc/../../../etc/passwd", b"/novnc/%2e%2e/%2e%2e/etc/passwd", b"/screen/Bad_Name",
                 b"/ws/testvm", b"/etc/passwd"):
        head, _ = await get(b"GET " + path + b" HTTP/1.1\r\n\r\n")
        assert head.startswith("HTTP/1.1 404"), path
    head, _ = await get(b"POST / HTTP/1.1\r\n\r\n")
    assert head.startswith("HTTP/1.1 405")
