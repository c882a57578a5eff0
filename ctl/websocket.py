"""The server side of RFC 6455 WebSockets, enough for noVNC: the handshake, a pure frame codec
(``parse_frame`` over a buffer, ``encode_frame``), and a connection usable as a tunnel's local end."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import struct
from dataclasses import dataclass

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_PAYLOAD = 1024 * 1024  # a viewer's frames are tiny (keys, pointer, update requests)


class ProtocolError(Exception):
    pass


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


@dataclass(frozen=True)
class WsFrame:
    fin: bool
    opcode: int
    payload: bytes


def parse_frame(buf: bytes | bytearray) -> tuple[WsFrame | None, int]:
    """The first whole frame in buf and the bytes it took, or (None, 0) when more are needed. A
    client's frames must be masked (RFC 6455 5.1)."""
    if len(buf) < 2:
        return None, 0
    b0, b1 = buf[0], buf[1]
    if b0 & 0x70:
        raise ProtocolError("reserved bits set (no extension was agreed)")
    if not b1 & 0x80:
        raise ProtocolError("a client frame without a mask")
    length, pos = b1 & 0x7F, 2
    if length == 126:
        if len(buf) < 4:
            return None, 0
        length, pos = struct.unpack(">H", buf[2:4])[0], 4
    elif length == 127:
        if len(buf) < 10:
            return None, 0
        length, pos = struct.unpack(">Q", buf[2:10])[0], 10
    if length > MAX_PAYLOAD:
        raise ProtocolError(f"a frame of {length} bytes")
    if len(buf) < pos + 4 + length:
        return None, 0
    mask = buf[pos:pos + 4]
    data = bytes(buf[pos + 4:pos + 4 + length])
    if length:
        key = (bytes(mask) * (length // 4 + 1))[:length]
        data = (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(length, "big")
    return WsFrame(fin=bool(b0 & 0x80), opcode=b0 & 0x0F, payload=data), pos + 4 + length


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """A server's frame: final, unmasked."""
    n = len(payload)
    if n < 126:
        head = struct.pack(">BB", 0x80 | opcode, n)
    elif n < 1 << 16:
        head = struct.pack(">BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack(">BBQ", 0x80 | opcode, 127, n)
    return head + payload


class WebSocketEnd:
    """An upgraded connection as a byte stream: binary messages in and out (a tunnel's local end)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.buf = bytearray()
        self.pending = b""  # data of a message not yet read out
        self.closed = False

    async def _frame(self) -> WsFrame | None:
        while True:
            frame, used = parse_frame(self.buf)
            if frame is not None:
                del self.buf[:used]
                return frame
            chunk = await self.reader.read(65536)
            if not chunk:
                return None
            self.buf += chunk

    async def read(self, n: int) -> bytes:
        while not self.pending and not self.closed:
            try:
                frame = await self._frame()
            except (ProtocolError, ConnectionError):
                frame = None
            if frame is None or frame.opcode == CLOSE:
                self.closed = True
                break
            if frame.opcode == PING:
                await self._send(PONG, frame.payload)
            elif frame.opcode in (BINARY, TEXT, CONTINUATION):
                self.pending = frame.payload
        data, self.pending = self.pending[:n], self.pending[n:]
        return data

    async def _send(self, opcode: int, payload: bytes) -> None:
        self.writer.write(encode_frame(opcode, payload))
        await self.writer.drain()

    async def write(self, data: bytes) -> None:
        await self._send(BINARY, data)

    async def close(self) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            await self._send(CLOSE, struct.pack(">H", 1000))
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()
