"""A view-only VNC session (pure): the client's side of the RFB stream with every input taken out.

The launcher runs a viewer's session (opened on ``virtbus.vnc.<node>.<vmi>.view``) through this:
the handshake passes (with the shared flag forced on, so a viewer never disconnects the others),
then framebuffer requests, pixel formats, encodings, continuous updates and fences pass, while key
and pointer events, clipboard text, desktop resizes, XVP power requests and QEMU's extended key and
audio messages are dropped. A message it does not know ends the session (ViewOnlyBroken): it cannot
know its length, and passing it could pass input.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from servicekit.tunnelpump import LocalEnd

VERSION_LEN = 12


class ViewOnlyBroken(ValueError):
    pass


def _length(buf: bytes | bytearray) -> tuple[int, bool] | None:
    """(length, passes) of the client message at the start of buf; None until enough is there."""
    kind = buf[0]
    fixed = {0: (20, True), 3: (10, True), 150: (10, True), 4: (8, False), 5: (6, False), 250: (4, False)}
    if kind in fixed:
        return fixed[kind]
    if kind == 2:  # SetEncodings: count of 4-byte encodings
        return (4 + 4 * struct.unpack(">H", buf[2:4])[0], True) if len(buf) >= 4 else None
    if kind == 6:  # ClientCutText; a negative length is the extended clipboard's
        return (8 + abs(struct.unpack(">i", buf[4:8])[0]), False) if len(buf) >= 8 else None
    if kind == 248:  # ClientFence: 3 padding, flags, length, payload
        return (9 + buf[8], True) if len(buf) >= 9 else None
    if kind == 251:  # SetDesktopSize: screens of 16 bytes
        return (8 + 16 * buf[6], False) if len(buf) >= 7 else None
    if kind == 255:  # QEMU: extended key event (0), audio (1)
        if len(buf) < 2:
            return None
        if buf[1] == 0:
            return 12, False
        if buf[1] == 1:
            if len(buf) < 4:
                return None
            return (10 if struct.unpack(">H", buf[2:4])[0] == 2 else 4), False
    raise ViewOnlyBroken(f"client message type {kind} (subtype {buf[1] if len(buf) > 1 else '?'}) is not known")


@dataclass
class ViewOnly:
    buf: bytearray = field(default_factory=bytearray)
    stage: str = "version"  # version, security, init, messages
    dropped: int = 0  # input messages taken out

    def feed(self, data: bytes) -> bytes:
        """What of the client's bytes so far may reach the server (the rest waits for more)."""
        self.buf += data
        out = bytearray()
        while self.buf:
            if self.stage == "version":
                if len(self.buf) < VERSION_LEN:
                    break
                version = bytes(self.buf[:VERSION_LEN])
                if not version.startswith(b"RFB 003."):
                    raise ViewOnlyBroken(f"not an RFB client: {version!r}")
                # 3.3 has the server choose the security type; later versions send the client's choice
                self.stage = "init" if version == b"RFB 003.003\n" else "security"
                n = VERSION_LEN
            elif self.stage == "security":
                if self.buf[0] != 1:  # the launcher's QEMU offers None only
                    raise ViewOnlyBroken(f"security type {self.buf[0]}")
                self.stage, n = "init", 1
            elif self.stage == "init":
                out += b"\x01"  # ClientInit: shared, whatever the viewer asked
                del self.buf[:1]
                self.stage = "messages"
                continue
            else:
                found = _length(self.buf)
                if found is None or len(self.buf) < found[0]:
                    break
                n, passes = found
                if not passes:
                    self.dropped += 1
                    del self.buf[:n]
                    continue
            out += self.buf[:n]
            del self.buf[:n]
        return bytes(out)


class ViewOnlyEnd:
    """A local end (servicekit.tunnelpump.LocalEnd) whose writes go through ViewOnly."""

    def __init__(self, inner: LocalEnd) -> None:
        self.inner = inner
        self.filter = ViewOnly()

    async def read(self, n: int) -> bytes:
        return await self.inner.read(n)

    async def write(self, data: bytes) -> None:
        passed = self.filter.feed(data)
        if passed:
            await self.inner.write(passed)

    async def close(self) -> None:
        await self.inner.close()
