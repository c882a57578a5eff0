"""A byte-stream tunnel's bookkeeping over NATS frames (pure; the clock is passed in).

One ``Flow`` per side of a session: what it sent and what the other side acknowledged (it sends no
more than the window beyond that), what it received and has yet to acknowledge, and when it last
heard from or spoke to the other side (keepalives, and the end of a session whose peer vanished).
The I/O around it is servicekit.tunnelpump.
"""

from __future__ import annotations

from dataclasses import dataclass

from proto.vnc import IDLE_TIMEOUT_S, KEEPALIVE_S, WINDOW, Frame


class TunnelBroken(Exception):
    """The session cannot go on: the stream would be corrupt, or the peer broke the rules."""


@dataclass
class Flow:
    window: int = WINDOW
    keepalive_s: float = KEEPALIVE_S
    idle_timeout_s: float = IDLE_TIMEOUT_S
    sent: int = 0  # bytes of our stream sent
    acked: int = 0  # of those, bytes the peer has written out
    received: int = 0  # bytes of the peer's stream received, in order
    taken: int = 0  # of those, bytes written out to our local end (what we acknowledge)
    acked_to_peer: int = 0  # what our last frame told the peer we took
    last_heard: float = 0.0
    last_spoke: float = 0.0
    sent_eof: bool = False  # our stream ended (eof_frame): no data after it
    peer_eof: bool = False  # the peer's stream ended: all of it received

    @property
    def both_ended(self) -> bool:
        return self.sent_eof and self.peer_eof

    def start(self, now: float) -> None:
        self.last_heard = self.last_spoke = now

    def room(self) -> int:
        """How many more bytes may be sent now."""
        return max(0, self.window - (self.sent - self.acked))

    def data_frame(self, data: bytes, now: float) -> Frame:
        """The next frame of our stream (carrying our ack); data must fit the room."""
        if len(data) > self.room():
            raise TunnelBroken(f"{len(data)} bytes would overrun the window ({self.room()} left)")
        if self.sent_eof:
            raise TunnelBroken("data after the end of our stream")
        frame = Frame(offset=self.sent, data=data, ack=self.taken)
        self.sent += len(data)
        self._spoke(now)
        return frame

    def ack_frame(self, now: float) -> Frame:
        """A frame with no data: an acknowledgement or a keepalive."""
        self._spoke(now)
        return Frame(offset=self.sent, ack=self.taken)

    def eof_frame(self, now: float) -> Frame:
        """The end of our stream at what was sent (TCP's half-close): the peer shuts its local end's
        sending half once it has written out everything before it."""
        self.sent_eof = True
        self._spoke(now)
        return Frame(offset=self.sent, ack=self.taken, eof=True)

    def close_frame(self, why: str) -> Frame:
        return Frame(offset=self.sent, ack=self.taken, close=why or "closed")

    def _spoke(self, now: float) -> None:
        self.acked_to_peer = self.taken
        self.last_spoke = now

    def on_frame(self, frame: Frame, now: float) -> bytes:
        """A frame from the peer: its data (to write out, in order), its ack applied. Data that does
        not start where the stream stands means a frame was lost: TunnelBroken."""
        self.last_heard = now
        if frame.ack > self.sent or frame.ack < self.acked:
            raise TunnelBroken(f"the peer acknowledged {frame.ack} bytes of {self.sent} sent (last ack {self.acked})")
        self.acked = frame.ack
        if frame.data and self.peer_eof:
            raise TunnelBroken("data after the end of the peer's stream")
        if frame.data and frame.offset != self.received:
            raise TunnelBroken(f"data at {frame.offset}, expected {self.received}: a frame was lost")
        self.received += len(frame.data)
        if frame.eof:
            if frame.offset + len(frame.data) != self.received:
                raise TunnelBroken(f"the peer's stream ended at {frame.offset + len(frame.data)}, "
                                   f"{self.received} received: a frame was lost")
            self.peer_eof = True
        return frame.data

    def wrote(self, n: int) -> None:
        """n bytes of the peer's stream are written out locally: acknowledge them."""
        if self.taken + n > self.received:
            raise TunnelBroken("wrote out more than was received")
        self.taken += n

    def ack_due(self) -> bool:
        """Acknowledge now (written-out bytes the peer waits for): after a quarter window, so the
        sender never stalls on a full window while we sit on our acks."""
        return self.taken - self.acked_to_peer >= self.window // 4

    def keepalive_due(self, now: float) -> bool:
        """Say something (our ack) after a quiet while: the peer knows we are here, and gets the
        acks of a trickle of data that never reached a quarter window."""
        return now - self.last_spoke >= self.keepalive_s or (
            self.taken > self.acked_to_peer and now - self.last_spoke >= 0.05)

    def peer_gone(self, now: float) -> bool:
        return now - self.last_heard >= self.idle_timeout_s
