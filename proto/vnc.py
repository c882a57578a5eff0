"""A VMI's screen over NATS: the VNC tunnel's messages and the screenshot's.

A client opens a session on ``virtbus.vnc.<node>.<vmi>.open`` (request/reply) with a session id it
made up, having subscribed first to ``virtbus.vnc.<node>.<vmi>.full.<session>.down``; the VMI's
launcher connects to QEMU's VNC socket, subscribes to ``...full.<session>.up`` and only then replies.
A view-only session is the same on ``.view`` and ``...view.<session>.up|down``: the launcher takes
every input out of what the client sends (launcher.rfbfilter); it is what a viewer may open. From there
both directions carry ``Frame``s (msgpack): the bytes of the stream in order (``offset`` is where
``data`` starts in it), each side acknowledging what it has written out (``ack``: bytes taken so far),
so no side has more than ``WINDOW`` bytes in flight. A frame with ``eof`` says its side's stream ended
at ``offset`` (TCP's half-close: port-forward sends it, and the other side shuts its socket's sending
half, while the other direction goes on). A frame with ``close`` ends the session; a side
that hears nothing (not even the keepalive) for ``IDLE_TIMEOUT_S`` ends it too. Core NATS keeps one
publisher's messages in order; a frame that went missing (a gap in offsets) ends the session rather
than corrupting the stream.
"""

from __future__ import annotations

import re

import msgspec

from proto.api import Message
from proto.errors import ApiError, Code

WINDOW = 512 * 1024  # bytes a side may send beyond what the other acknowledged
CHUNK = 32 * 1024  # the most data in one frame (well under NATS's max_payload)
KEEPALIVE_S = 5.0  # a side that sent nothing for this long sends an empty frame (its ack)
IDLE_TIMEOUT_S = 15.0  # a side that heard nothing for this long counts the other gone
MAX_SESSIONS = 8  # per VMI, in its launcher
_SESSION = re.compile(r"^[a-z0-9]{16,32}$")  # also a subject token


class VncOpen(Message, frozen=True):
    session: str


class VncOpened(Message, frozen=True):
    session: str
    window: int


class Frame(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    offset: int = 0  # where data starts in this direction's byte stream
    data: bytes = b""
    ack: int = 0  # bytes of the other direction this side has written out
    close: str = ""  # non-empty: the session ended, and why
    # this direction's stream ended at offset, the other goes on (a port-forward client's half-close);
    # a peer that predates it ignores it, as msgpack's unknown keys are
    eof: bool = False


class Screenshot(Message, frozen=True):
    """The VMI's screen as a PNG (QEMU's PPM converted by the launcher, far smaller on the bus)."""

    png: bytes
    width: int
    height: int


_frame_encoder = msgspec.msgpack.Encoder()
_frame_decoder = msgspec.msgpack.Decoder(Frame)


def encode_frame(frame: Frame) -> bytes:
    return _frame_encoder.encode(frame)


def decode_frame(data: bytes) -> Frame:
    """A frame, or ApiError(BAD_REQUEST) for anything else (anyone allowed there could publish)."""
    try:
        frame = _frame_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise ApiError(Code.BAD_REQUEST, f"not a VNC tunnel frame: {exc}") from None
    if frame.offset < 0 or frame.ack < 0 or len(frame.data) > CHUNK:
        raise ApiError(Code.BAD_REQUEST, "a VNC tunnel frame with a negative offset or ack, or over-long data")
    return frame


def check_session(session: str) -> str:
    if not _SESSION.fullmatch(session):
        raise ApiError(Code.INVALID, "a VNC session id is 16-32 of a-z0-9", "session")
    return session
