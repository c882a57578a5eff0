"""The web console's WebSocket codec (ctl.websocket): RFC 6455's handshake and frames."""

import os
import struct

import pytest

from ctl.websocket import BINARY, CLOSE, ProtocolError, accept_key, encode_frame, parse_frame


def client_frame(opcode: int, payload: bytes, mask: bytes = b"\x01\x02\x03\x04") -> bytes:
    n = len(payload)
    head = (struct.pack(">BB", 0x80 | opcode, 0x80 | n) if n < 126 else
            struct.pack(">BBH", 0x80 | opcode, 0x80 | 126, n) if n < 65536 else
            struct.pack(">BBQ", 0x80 | opcode, 0x80 | 127, n))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_the_rfc_example_handshake() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 section 1.3


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536])
def test_masked_client_frames_unmasked_whole_or_waiting_for_more(size: int) -> None:
    payload = os.urandom(size)
    wire = client_frame(BINARY, payload) + b"next"
    assert parse_frame(wire[:-5]) == (None, 0)
    frame, used = parse_frame(wire)
    assert frame is not None and (frame.fin, frame.opcode, frame.payload) == (True, BINARY, payload)
    assert wire[used:] == b"next"


def test_unmasked_or_huge_client_frames_are_refused() -> None:
    with pytest.raises(ProtocolError):
        parse_frame(struct.pack(">BB", 0x82, 3) + b"abc")
    with pytest.raises(ProtocolError):
        parse_frame(struct.pack(">BBQ", 0x82, 0xFF, 1 << 40) + b"\x00" * 4)


def test_server_frames_are_unmasked_with_the_right_length() -> None:
    assert encode_frame(CLOSE, b"") == b"\x88\x00"
    assert encode_frame(BINARY, b"x" * 200)[:4] == b"\x82\x7e\x00\xc8"
    assert encode_frame(BINARY, b"x" * 70000)[:2] == b"\x82\x7f"
