"""View-only VNC sessions (launcher.rfbfilter): what a viewer's client sends, with the input taken out."""

import struct

import pytest

from launcher.rfbfilter import ViewOnly, ViewOnlyBroken

HANDSHAKE = b"RFB 003.008\n" + b"\x01" + b"\x00"  # version, security None, ClientInit exclusive
SET_PIXEL_FORMAT = struct.pack(">BxxxBBBBHHHBBBxxx", 0, 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
SET_ENCODINGS = struct.pack(">BxHiii", 2, 3, 0, 7, -223)
UPDATE = struct.pack(">BBHHHH", 3, 1, 0, 0, 720, 400)
KEY = struct.pack(">BBxxI", 4, 1, 0x61)
POINTER = struct.pack(">BBHH", 5, 1, 10, 10)
CUT = struct.pack(">Bxxxi", 6, 5) + b"hello"
CUT_EXTENDED = struct.pack(">Bxxxi", 6, -8) + b"\x00" * 8
QEMU_KEY = struct.pack(">BBHII", 255, 0, 1, 0x61, 0x1e)
FENCE = struct.pack(">BxxxIB", 248, 0, 2) + b"ab"
RESIZE = struct.pack(">BxHHBx", 251, 800, 600, 1) + b"\x00" * 16
XVP = struct.pack(">BxBB", 250, 1, 2)
CONTINUOUS = struct.pack(">BBHHHH", 150, 1, 0, 0, 720, 400)


def test_the_screen_passes_and_every_input_is_taken_out() -> None:
    f = ViewOnly()
    stream = (HANDSHAKE + SET_PIXEL_FORMAT + KEY + SET_ENCODINGS + POINTER + UPDATE + CUT + QEMU_KEY + FENCE
              + CUT_EXTENDED + RESIZE + XVP + CONTINUOUS)
    out = f.feed(stream)
    assert out == b"RFB 003.008\n\x01\x01" + SET_PIXEL_FORMAT + SET_ENCODINGS + UPDATE + FENCE + CONTINUOUS
    assert f.dropped == 7


def test_byte_by_byte_it_is_the_same() -> None:
    whole = HANDSHAKE + KEY + UPDATE + POINTER + SET_ENCODINGS
    f = ViewOnly()
    out = b"".join(f.feed(whole[i:i + 1]) for i in range(len(whole)))
    assert out == ViewOnly().feed(whole) == b"RFB 003.008\n\x01\x01" + UPDATE + SET_ENCODINGS


def test_rfb_3_3_has_no_security_choice() -> None:
    assert ViewOnly().feed(b"RFB 003.003\n\x00" + KEY + UPDATE) == b"RFB 003.003\n\x01" + UPDATE


@pytest.mark.parametrize("bad", [b"GET / HTTP/1.1\r\n", b"RFB 003.008\n\x02", HANDSHAKE + b"\x07abcdefgh",
                                 HANDSHAKE + struct.pack(">BB", 255, 9)])
def test_anything_unknown_ends_the_session(bad: bytes) -> None:
    with pytest.raises(ViewOnlyBroken):
        ViewOnly().feed(bad)
